"""One backfill run: journal text -> usage records -> HEC events -> ledger-filtered delivery -> report.

Every stage is a generator, so memory stays flat however long the journal is. Nothing is lost:
an event is either delivered (and recorded in the ledger), skipped because an earlier run
delivered it, or written to the dead-letter file that ``--replay`` sends again.
"""
from __future__ import annotations

import json
import os
import shlex
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from functools import cached_property, lru_cache
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Optional, TextIO

from . import events as ev_mod
from .errors import ConfigError, InputError
from .journal import ReadStats, open_inputs, read_entries
from .ledger import Ledger, default_ledger_path
from .timespec import display_utc, utc_month
from .usage_log import ExtractStats, UsageExtractor, UsageRecord, extract

ERA_NAMES = {"A": "A (9c7664e: Sending usage event)", "B": "B (9820dfe: Forwarding usage event)",
             "C": "C (292b3a9..6dff23a: [HEC EXPORT], no source=)", "D": "D (d7fc0bd..HEAD: [HEC EXPORT] source=)",
             "R": "replayed (dead letters or an ndjson preview)", "T": "true-up corrections"}


@dataclass
class BackfillOptions:
    inputs: list = field(default_factory=lambda: ["-"])
    zone: Optional[tzinfo] = None
    year: Optional[int] = None
    dry_run: bool = False
    verbose: bool = False
    only_failed: bool = False
    include_errors: bool = False
    since: Optional[float] = None
    until: Optional[float] = None
    output: Optional[str] = None        # table | ndjson | none (default: table for dry runs)
    reason: Optional[str] = None
    index: str = "oai_circuit"
    sourcetype: str = "llm:usage"
    source: str = "oai-to-circuit"
    db_path: Optional[str] = None
    ledger_path: Optional[str] = None
    force: bool = False
    replay: Optional[str] = None
    dead_letter_path: Optional[str] = None
    progress: Optional[bool] = None     # None: when stderr is a terminal
    destination: str = ""               # the collector(s), recorded in the ledger; "" = not configured
    replay_flags: tuple = ()            # (flag, value) a replay of this run's dead letters repeats (--ledger, ...)
    stop: Optional[threading.Event] = None  # set on SIGTERM / Ctrl-C: finish the POST on the wire, read no more
    date: Optional[str] = None          # --date as given (only its year is used)
    index_refused: bool = False         # HEC refused the index (code 7): a replay needs another one

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def replay_command(self, path) -> str:
        flags = "".join(f" {flag} {shlex.quote(str(v))}" for flag, v in self.replay_flags
                        if not (self.index_refused and flag == "--index"))  # the refused one would fail again
        if self.index_refused:
            flags += " --index INDEX (one that exists and the token may write to)"
        return f"python backfill_hec.py --replay {shlex.quote(str(path))}{flags}"


def destination_of(hec_url: str) -> str:
    """The collectors a setting names (host:port, sorted): recorded, and shown when they differ."""
    if not hec_url:
        return ""
    from urllib.parse import urlsplit

    from .splunk_hec import collector_urls

    return ",".join(sorted({urlsplit(u).netloc.lower() for u in collector_urls(hec_url)}))


@dataclass
class Candidate:
    """One event on its way to HEC. Its wire bytes are made when something sends or prints them
    (a dry run's preview table never needs them)."""
    backfill_id: str
    body: dict
    kind: str
    era: str
    outcome: str
    origin: str

    @cached_property
    def data(self) -> bytes:
        return ev_mod.encode(self.body)


@dataclass
class BackfillReport:
    run_id: str
    dry_run: bool
    read: ReadStats = field(default_factory=ReadStats)
    extract: ExtractStats = field(default_factory=ExtractStats)
    found: Counter = field(default_factory=Counter)          # (kind, era, outcome) -> n
    filtered: Counter = field(default_factory=Counter)       # reason -> n
    selected: int = 0
    duplicates_in_input: int = 0
    already_sent: int = 0
    resent_after_crash: list = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    maybe_doubled: list = field(default_factory=list)
    dead_letter_path: Optional[str] = None
    dead_reasons: Counter = field(default_factory=Counter)
    tokens: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))  # (model, month) -> [n, p, c, t]
    t_min: Optional[float] = None
    t_max: Optional[float] = None
    names_warning: Optional[str] = None
    named: int = 0
    fatal: Optional[str] = None
    elapsed: float = 0.0
    index: str = ""
    sourcetype: str = ""
    reason: Optional[str] = None
    ledger_path: Optional[str] = None
    destination: str = ""
    zone_name: str = ""
    replay: Optional[str] = None
    selected_outcomes: Counter = field(default_factory=Counter)
    sent_to: Counter = field(default_factory=Counter)  # collectors the already-sent events went to
    maybe_sent: int = 0  # dead letters HEC may have received all the same (kept in flight in the ledger)
    replay_command: str = ""
    doubles_path: Optional[str] = None  # the backfill_ids that may be in Splunk twice, one per line
    renamed_since_sent: int = 0  # already-sent events whose friendly_name/email is not what was sent
    with_email: int = 0  # of the named events
    unnamed: Counter = field(default_factory=Counter)  # subkey (sha256: form) -> events without a name
    stopped: str = ""  # "request": stopped on SIGTERM/Ctrl-C after the POST on the wire; "now": a second signal
    date: Optional[str] = None  # --date, to say so when the events are from other days

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return 130
        if self.fatal:
            return 2
        return 1 if self.failed else 0

    def render(self) -> str:
        r = self.read
        out = []
        mode = "DRY RUN: nothing was sent" if self.dry_run else "backfill run"
        out.append(f"== {mode} (run {self.run_id}, {self.elapsed:.1f}s) ==")
        out.append(f"read:      {r.lines} lines from {r.inputs} input(s), {r.bytes / 1e6:.1f} MB; "
                   f"journalctl views seen: {', '.join(sorted(r.formats)) or 'none'}"
                   + (f"; short-view times read in {self.zone_name}" if self.zone_name else ""))
        noise = r.lines - r.parsed - r.skipped_total
        parts = [f"{noise} not usage-related"] + [f"{n} {why}" for why, n in sorted(r.skipped.items())]
        out.append(f"lines:     {r.parsed} usage-related (read for events); skipped: " + "; ".join(parts))
        if self.extract.ignored:  # among the usage-related lines: what made no event
            out.append("ignored:   " + "; ".join(f"{n} {why}" for why, n in sorted(self.extract.ignored.items())))
        if r.blob_lines:
            out.append(f"warning:   {r.blob_lines} lines were stored as binary ('[NNNB blob data]') and cannot be read;"
                       " re-extract with 'journalctl -a' or '-o json'")
        x = self.extract
        if x.clock_mismatch:
            h = x.clock_skew / 3600
            out.append(f"note:      the journal text was printed in a zone {h:+g} h from the one assumed"
                       f" ({self.zone_name}): {x.clock_mismatch} events logged with their own time show it."
                       f" The times of {x.clock_corrected} events rebuilt from summary lines were corrected"
                       " by it; pass --tz ZONE (the zone journalctl printed in) to say so yourself")
            if x.clock_unchecked:
                out.append(f"WARNING:   {x.clock_unchecked} events came before any event could check the zone"
                           f" and may be off by {h:+g} h: run again with --tz ZONE")
        if x.journal_date_mismatch:
            out.append(f"note:      on {x.journal_date_mismatch} service lines the journal's date is a day or more from"
                       " the service's own (--year or --date?): the service's own date was used")
        found_total = sum(self.found.values())
        if r.no_entries and not found_total and not x.service_lines and not self.replay:
            out.append("note:      journalctl printed '-- No entries --': it found nothing in the range or unit"
                       " asked for (check --since/--until and -u oai-to-circuit); nothing to backfill")
        elif r.lines and not found_total and not x.service_lines and not self.replay:
            out.append("WARNING:   no line of the service was recognised: is this journalctl output of"
                       " oai-to-circuit (journalctl -u oai-to-circuit)? At LOG_LEVEL=WARNING it logs no usage.")
        out.append(f"found:     {found_total} events " + ("in the replay file" if self.replay else
                                                         "the service tried to send"))
        by_era = defaultdict(Counter)
        for (kind, era, outcome), n in self.found.items():
            by_era[(kind, era)][outcome] += n
        for (kind, era), c in sorted(by_era.items()):
            if era in ("R", "T"):
                out.append(f"  {kind:<5} {ERA_NAMES[era]}: {sum(c.values())}")
                continue
            detail = ", ".join(f"{o} {c[o]}" for o in ("delivered", "failed", "uncertain", "unknown") if c[o])
            out.append(f"  {kind:<5} era {ERA_NAMES.get(era, era)}: {sum(c.values())} (live send: {detail})")
        if self.extract.streams_without_usage:
            out.append(f"  note: {self.extract.streams_without_usage} streamed responses carried no usage;"
                       " the service exported no event for them (nothing to backfill)")
        if self.duplicates_in_input:
            out.append(f"repeats:   {self.duplicates_in_input} events appeared more than once in the input"
                       " (overlapping extracts); each is sent once")
        if self.filtered:
            out.append("not selected: " + "; ".join(f"{n} {why}" for why, n in sorted(self.filtered.items())))
        if self.names_warning:
            out.append(f"names:     {self.names_warning}")
        else:
            line = f"names:     friendly_name joined on {self.named} of {self.selected} events ({self.with_email} with email)"
            if self.unnamed:
                keys = ", ".join(f"{k} ({n} events)" for k, n in self.unnamed.most_common(5))
                more = f" and {len(self.unnamed) - 5} more" if len(self.unnamed) > 5 else ""
                line += (f"; no name for {len(self.unnamed)} subkey{'s' if len(self.unnamed) > 1 else ''}: {keys}{more}"
                         " (python check_and_setup_names.py prints the --add commands)")
            out.append(line)
        live = self.selected_outcomes.get("delivered", 0)
        if live:
            out.append(f"note:      {live} of the events to send already reached Splunk live: the backfill adds a"
                       " copy of each (backfill_live_send=delivered). Leave the copies out of totals with"
                       " NOT (backfill=true backfill_live_send=delivered), or send only what was lost with"
                       " --only-failed.")
        unsure = self.selected_outcomes.get("uncertain", 0)
        if unsure:
            out.append(f"note:      {unsure} of the events to send timed out live: HEC may have indexed "
                       f"{'it' if unsure == 1 else 'them'} then (a copy with backfill_live_send=uncertain)")
        verb = "would send" if self.dry_run else "to send"
        out.append(f"selected:  {self.selected} events; {self.already_sent} already sent by an earlier run"
                   f" (skipped; --force resends); {self.selected - self.already_sent} {verb}")
        if not self.dry_run:
            out.append(f"delivered: {self.delivered}    failed: {self.failed}")
        if self.ledger_path:
            new = " (no ledger yet: nothing was ever sent with it)" if self.dry_run and not os.path.exists(
                self.ledger_path) else ""
            out.append(f"ledger:    {self.ledger_path} (index {self.index}){new}")
        if self.renamed_since_sent:
            out.append(f"note:      {self.renamed_since_sent} of the events already sent went without the friendly_name/"
                       "email subkey_names gives them now (names added or changed since). Splunk does not change"
                       " indexed events: join today's names at search time ((umask 077; add_subkey_names_table.py"
                       " --list --format csv > subkey_names.csv), upload it as a lookup, then | lookup subkey_names.csv"
                       " subkey_sha256 AS subkey OUTPUT friendly_name email), or delete those events in Splunk"
                       " and resend them with --force")
        elsewhere = {d: n for d, n in self.sent_to.items() if d and d != self.destination}
        if elsewhere:
            where = ", ".join(f"{n} to {d}" for d, n in sorted(elsewhere.items()))
            out.append(f"note:      of the events already sent, {where}: not the collector(s) this run uses"
                       f" ({self.destination or 'none set'}). If that was a test HEC, send here too with --force"
                       " (or use another --ledger for trial runs)")
        if self.resent_after_crash:
            out.append(f"note:      {len(self.resent_after_crash)} events were left unconfirmed by an earlier run (it"
                       " stopped mid-delivery, or HEC never confirmed them); they were sent again and may be doubled")
        if self.maybe_doubled:
            out.append(f"doubles?:  {len(self.maybe_doubled)} events were resent after an ambiguous send"
                       " (timeout or lost ack) and may be in Splunk twice")
        if self.doubles_path:
            n = len(set(self.maybe_doubled) | set(self.resent_after_crash))
            out.append(f"           the backfill_id of each of those {n} is in {self.doubles_path}")
            out.append(f"           find real doubles: index={self.index} backfill=true | stats count by backfill_id"
                       " | where count > 1")
            out.append("           remove doubles in searches with: | dedup backfill_id")
        if self.dead_letter_path:
            why = "; ".join(f"{n} {w}" for w, n in self.dead_reasons.most_common(5))
            out.append(f"dead letters: {self.failed} events written to {self.dead_letter_path} ({why})")
            out.append(f"           resend them with: {self.replay_command}")
            if self.maybe_sent:
                out.append(f"           {self.maybe_sent} of them may have reached HEC all the same (a timeout, a lost"
                           " ack, or a stop mid-POST): a replay names them as possible doubles")
        if self.fatal:
            out.append(f"STOPPED:   {self.fatal}")
        if self.stopped:
            how = "on request (SIGTERM or Ctrl-C)" if self.stopped == "request" else "at once (a second SIGTERM or Ctrl-C)"
            if self.dry_run:
                out.append(f"STOPPED:   {how}: {self.selected} events previewed, the rest of the input not read")
            else:
                out.append(f"STOPPED:   {how}: {self.delivered} events delivered, the rest of the input not read. Run"
                           " the same command again to finish: the ledger skips what was delivered")
        if self.tokens:
            out.append("tokens by model and month (UTC) of the events "
                       + ("that would be sent:" if self.dry_run else "delivered:"))
            out.append(f"  {'model':<20} {'month':<8} {'events':>7} {'prompt':>12} {'completion':>12} {'total':>12}")
            for (model, month), (n, p, c, t) in sorted(self.tokens.items()):
                out.append(f"  {str(model):<20} {month:<8} {n:>7} {p:>12,} {c:>12,} {t:>12,}")
        if self.t_min is not None and not self.dry_run and self.delivered:
            earliest = int(self.t_min)
            latest = int(self.t_max) + 1
            reason = f' backfill_reason="{spl_quote(self.reason)}"' if self.reason else ""
            out.append("verify in Splunk:")
            out.append(f'  index={self.index} sourcetype="{self.sourcetype}" backfill=true{reason}'
                       f" earliest={earliest} latest={latest} | dedup backfill_id"
                       " | stats count sum(total_tokens) by model")
        elif self.t_min is not None and self.dry_run:
            out.append(f"time range: {display_utc(self.t_min)} .. {display_utc(self.t_max)}")
        if self.date and self.t_min is not None and not (
                display_utc(self.t_min)[:10] <= self.date <= display_utc(self.t_max)[:10]):
            out.append(f"note:      --date {self.date} gave the short-view timestamps their year; the events are from"
                       f" {display_utc(self.t_min)[:10]} .. {display_utc(self.t_max)[:10]} (UTC), not that day:"
                       " to select days use --since/--until")
        return "\n".join(out)


def _write_doubles(opts, report) -> Path:
    """Every backfill_id this run may have put in Splunk twice, one per line, beside the dead letters."""
    if opts.dead_letter_path:
        dl = Path(opts.dead_letter_path)
        path = dl.with_name(dl.stem + ".maybe-doubled.txt")
    else:
        path = default_dead_letter_path(report.run_id, "maybe-doubled", "txt")
    ids = dict.fromkeys(report.resent_after_crash + report.maybe_doubled)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids), encoding="ascii")
    return path


def spl_quote(text: str) -> str:
    """The inside of an SPL double-quoted string: backslash and quote escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


class DeadLetters:
    """NDJSON, mode 0600 (events hold emails), created only when something fails."""

    def __init__(self, path: Path):
        self.path = path
        self.fh: Optional[TextIO] = None

    def write(self, cand_body: dict, backfill_id: str, reason: str, maybe_sent: bool = False) -> None:
        if self.fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self.fh = os.fdopen(fd, "w", encoding="utf-8")
        rec = {"backfill_id": backfill_id, "reason": reason, "maybe_sent": maybe_sent,
               "failed_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "hec": cand_body}
        self.fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def default_dead_letter_path(run_id: str, kind: str = "dead-letters", ext: str = "ndjson") -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"backfill-{kind}-{stamp}-{run_id}.{ext}"
    cwd = Path.cwd()
    if os.access(cwd, os.W_OK):
        return cwd / name
    return default_ledger_path().parent / name


# -- stage: candidates from the journal --------------------------------------------------------
def journal_candidates(opts: BackfillOptions, report: BackfillReport, names, log) -> Iterator[Candidate]:
    extractor = UsageExtractor(opts.zone, report.extract)
    entries = read_entries(opts.inputs, zone=opts.zone, year=opts.year, stats=report.read, keep=extractor.keep)
    progress = _Progress(report, enabled=opts.progress)
    for rec in extract(entries, extractor):
        progress.tick()
        report.found[(rec.kind, rec.era, rec.outcome)] += 1
        why = _filter(rec, opts)
        if why:
            report.filtered[why] += 1
            if opts.verbose:
                log(f"skip {rec.source}:{rec.line_no} ({rec.kind}, era {rec.era}): {why}")
            continue
        body = ev_mod.to_hec(rec, index=opts.index, sourcetype=opts.sourcetype, source=opts.source,
                             names=names, reason=opts.reason)
        if "friendly_name" in body["event"]:
            report.named += 1
            report.with_email += "email" in body["event"]
        elif names is not None and len(report.unnamed) < 1000:  # bounded, whatever the input holds
            report.unnamed[str(body["event"].get("subkey"))] += 1
        if opts.verbose:
            e = body["event"]
            log(f"event {e['backfill_id']} from {rec.source}:{rec.line_no}: {rec.kind} era {rec.era},"
                f" live send {rec.outcome} ({rec.detail}); time {display_utc(rec.time)} from {rec.time_source};"
                f" {'full JSON in log' if rec.full_json else 'rebuilt from the summary line'};"
                f" name {e.get('friendly_name', '(none)')}")
        yield Candidate(body["event"]["backfill_id"], body, rec.kind, rec.era, rec.outcome,
                        f"{rec.source}:{rec.line_no}")
    progress.done()


def _filter(rec: UsageRecord, opts: BackfillOptions) -> Optional[str]:
    if rec.kind == "error" and not opts.include_errors:
        return "error events (quota_exceeded, unauthorized_subkey; --include-errors sends them)"
    if opts.only_failed and rec.outcome not in ("failed", "uncertain"):
        return "delivered live, or outcome unknown (--only-failed)"
    if rec.time is None:
        return "events without any time"
    if opts.since is not None and rec.time < opts.since:
        return "before --since"
    if opts.until is not None and rec.time >= opts.until:
        return "at or after --until"
    return None


def replay_candidates(path: str, opts: "BackfillOptions", report: BackfillReport, log) -> Iterator[Candidate]:
    """Dead-letter lines ({"hec": body, ...}) or bare HEC bodies (--output ndjson) are both accepted."""
    report.read.inputs += 1
    for _, lines in open_inputs([path]):  # .gz or plain, like the journal
        for n, raw in enumerate(lines, 1):
            report.read.lines += 1
            report.read.bytes += len(raw)
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                d = json.loads(line)
                body = d["hec"] if "hec" in d else d
                bid = body["event"]["backfill_id"]
            except (ValueError, KeyError, TypeError, RecursionError):
                report.read.skip("replay lines that are not a dead letter or HEC event")
                continue
            report.read.parsed += 1
            kind = "error" if str(body.get("sourcetype", "")).endswith(":error") else "usage"
            report.found[(kind, "R", "replayed")] += 1
            # to where the settings point now: a dead letter of a wrong --index is fixed by replaying
            body["index"] = opts.index
            body["sourcetype"] = f"{opts.sourcetype}:error" if kind == "error" else opts.sourcetype
            if "friendly_name" in body["event"]:
                report.named += 1
            yield Candidate(bid, body, kind, "R", "failed", f"{path}:{n}")
    if report.read.lines and not report.read.parsed:
        raise InputError(f"--replay {path}: no line is a dead letter or an HEC event"
                         " (replay takes the backfill-dead-letters-*.ndjson file a run wrote)")


# -- the run -----------------------------------------------------------------------------------
def candidates_from_bodies(bodies: Iterable[dict], report: BackfillReport, era: str = "T",
                           origin: str = "generated") -> Iterator[Candidate]:
    """HEC bodies made elsewhere (true-up corrections) into the same delivery path.

    Each body needs ``event.backfill_id``: the ledger keys exactly-once delivery on it.
    """
    for n, body in enumerate(bodies, 1):
        kind = "error" if str(body.get("sourcetype", "")).endswith(":error") else "usage"
        report.found[(kind, era, "unknown")] += 1
        yield Candidate(body["event"]["backfill_id"], body, kind, era, "-", f"{origin}:{n}")


def run_backfill(opts: BackfillOptions, *, hec=None, names=None, names_warning=None,
                 stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None,
                 bodies: Optional[Iterable[dict]] = None) -> BackfillReport:
    """Run one backfill. ``hec`` is a SplunkHEC (None for dry runs). Returns the report.

    ``bodies``: send these ready-made HEC bodies instead of reading the journal (true-up).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr

    def log(msg: str) -> None:
        print(msg, file=stderr)

    started = time.monotonic()
    run_id = uuid.uuid4().hex[:12]
    report = BackfillReport(run_id=run_id, dry_run=opts.dry_run, index=opts.index, sourcetype=opts.sourcetype,
                            reason=opts.reason)
    report.names_warning = names_warning
    report.destination = opts.destination
    report.zone_name = "" if opts.zone is None else str(opts.zone)
    report.replay = opts.replay
    report.date = opts.date
    ledger_path = Path(opts.ledger_path) if opts.ledger_path else default_ledger_path()
    report.ledger_path = str(ledger_path)
    ledger = Ledger(ledger_path, run_id, readonly=opts.dry_run, destination=opts.destination)
    scratch_dir = None
    scratch = ledger
    if opts.dry_run:  # a throwaway ledger finds repeats inside this run without touching the real one
        scratch_dir = tempfile.TemporaryDirectory(prefix="backfill-dry-run-")
        scratch = _Seen(Path(scratch_dir.name) / "seen.db", run_id)
    output = opts.output or ("table" if opts.dry_run else "none")
    if bodies is not None:
        cands = candidates_from_bodies(bodies, report)
    elif opts.replay:
        cands = replay_candidates(opts.replay, opts, report, log)
    else:
        cands = journal_candidates(opts, report, names, log)
    table = _Table(stdout) if output == "table" else None
    try:
        try:
            _run_stages(opts, cands, ledger, scratch, report, hec, log, stdout, output, table)
            if opts.stopping():
                report.stopped = "request"
        except InputError as exc:  # e.g. a truncated .gz found mid-run: what was sent is in the report
            report.fatal = str(exc)
        except KeyboardInterrupt:  # a second signal: _send has put what was on its way in the dead letters
            report.stopped = "now"
    finally:
        if not opts.dry_run and (report.maybe_doubled or report.resent_after_crash):
            report.doubles_path = str(_write_doubles(opts, report))
        if table:
            table.close()
        ledger.close()
        if scratch_dir is not None:
            scratch.close()
            scratch_dir.cleanup()
        report.elapsed = time.monotonic() - started
    return report


def _run_stages(opts, cands, ledger, scratch, report, hec, log, stdout, output, table) -> None:
    if opts.dry_run:
        on_skip = (lambda c: table.row(c, "skip: already sent")) if table else None
        for c in _ledger_filter(cands, ledger, scratch, opts, report, log, on_skip):
            _account(report, c)
            _emit(output, c, stdout, table, "send")
            if opts.stopping():
                break
    else:
        _send(cands, ledger, opts, report, hec, log, stdout, output, table)


class _Seen:
    """The dry run's throwaway ledger: ids met in this run, in a temporary SQLite file.

    On disk (SQLite's page cache is bounded), so memory does not grow with the input; one
    transaction that is never committed, because nothing of it has to survive the run.
    """

    def __init__(self, path: Path, run_id: str):
        self.run_id = run_id
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE seen (index_name TEXT NOT NULL, backfill_id TEXT NOT NULL, "
                        "PRIMARY KEY (index_name, backfill_id)) WITHOUT ROWID")
        self.db.execute("BEGIN")

    def lookup_many(self, index: str, backfill_ids: list) -> dict:
        marks = ",".join("?" * len(backfill_ids))
        rows = self.db.execute(f"SELECT backfill_id FROM seen WHERE index_name=? AND backfill_id IN ({marks})",
                               (index, *backfill_ids))
        return {r[0]: ("inflight", self.run_id) for r in rows}

    def mark_inflight(self, index: str, backfill_id: str, names: Optional[int] = None) -> None:
        self.db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (index, backfill_id))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


def _ledger_filter(cands, ledger: Ledger, scratch: Ledger, opts, report, log, on_skip=None) -> Iterator[Candidate]:
    """Skip what an earlier run delivered and what this run already met (overlapping inputs).

    The ledger is asked about LOOKUP_CHUNK candidates at a time (one query each, not one per event).
    """
    for chunk in _chunks(cands, LOOKUP_CHUNK):
        ids = [c.backfill_id for c in chunk]
        seen_by_id = ledger.lookup_many(opts.index, ids)
        mine_by_id = scratch.lookup_many(opts.index, ids) if scratch is not ledger else {}
        met: set = set()  # marked by this chunk: the prefetched answers predate those marks
        for c in chunk:
            if _filter_one(c, seen_by_id.get(c.backfill_id), mine_by_id.get(c.backfill_id), met,
                           scratch, opts, report, log, on_skip) is not None:
                yield c


LOOKUP_CHUNK = 250


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while True:
        chunk = list(islice(it, n))
        if not chunk:
            return
        yield chunk


def _filter_one(c, seen, mine, met, scratch, opts, report, log, on_skip) -> Optional[Candidate]:
    """The ledger's verdict on one candidate: None (skipped), or the candidate, marked in flight."""
    if mine or c.backfill_id in met or (seen and seen[1] == scratch.run_id):
        report.duplicates_in_input += 1
        return None
    report.selected += 1
    if seen and seen[0] == "delivered" and not opts.force:
        report.already_sent += 1
        report.sent_to[seen[2]] += 1
        if seen[3] is not None and seen[3] != _names_sent(c.body):
            report.renamed_since_sent += 1
        if opts.verbose:
            log(f"skip {c.backfill_id} from {c.origin}: already delivered by an earlier run")
        if on_skip is not None:
            on_skip(c)
        return None
    if seen and seen[0] == "inflight":
        report.resent_after_crash.append(c.backfill_id)
        if opts.verbose:
            log(f"resend {c.backfill_id} from {c.origin}: in flight when an earlier run stopped"
                " (HEC may already have it)")
    met.add(c.backfill_id)
    scratch.mark_inflight(opts.index, c.backfill_id, _names_sent(c.body))
    report.selected_outcomes[c.outcome] += 1
    return c


def _names_sent(body: dict) -> int:
    """What the ledger keeps of an event's names (a CRC-32: small rows), to notice names added or
    changed after it went."""
    e = body["event"]
    return zlib.crc32(f"{e.get('friendly_name') or ''}\x1f{e.get('email') or ''}".encode("utf-8"))


def _account(report: BackfillReport, c: Candidate) -> None:
    t = c.body.get("time")
    e = c.body["event"]
    if isinstance(t, (int, float)):
        report.t_min = t if report.t_min is None else min(report.t_min, t)
        report.t_max = t if report.t_max is None else max(report.t_max, t)
        if c.kind == "usage":
            model = e.get("model")
            row = report.tokens[(model if isinstance(model, str) else "(none)", _utc_month(t))]
            row[0] += 1
            row[1] += _count(e.get("prompt_tokens"))
            row[2] += _count(e.get("completion_tokens"))
            row[3] += _count(e.get("total_tokens"))


def _count(v) -> int:
    """A token count as logged; anything that is not a number (null, "n/a") counts 0."""
    if isinstance(v, bool):
        return 0
    if isinstance(v, int):
        return v
    try:
        return int(float(v))
    except (TypeError, ValueError, OverflowError):
        return 0


def _utc_month(t: float) -> str:
    """utc_month(t), computed once per UTC day (events come in time order)."""
    return _month_of_day(int(t // 86400))


@lru_cache(maxsize=64)
def _month_of_day(day: int) -> str:
    return utc_month(day * 86400)


def _emit(output: str, c: Candidate, stdout, table, action: str) -> None:
    if output == "ndjson":
        stdout.write(c.data.decode("utf-8") + "\n")
    elif table is not None:
        table.row(c, action)


def _send(cands, ledger, opts, report, hec, log, stdout, output, table) -> None:
    from .splunk_hec import HECFatalError, Outgoing

    dead = DeadLetters(Path(opts.dead_letter_path) if opts.dead_letter_path else default_dead_letter_path(report.run_id))
    pending: dict = {}
    db = ledger.db
    # Ledger writes are grouped into transactions (one SQLite commit per group, not per event):
    # - in flight: up to `ahead` events are marked and COMMITTED before the first of them is handed
    #   to the HEC client, so each one's mark is durable before any POST that carries it;
    # - delivered: marked as HEC's results arrive, committed when the client next asks for an
    #   event (i.e. once per POST) and at the end; a crash before that commit leaves them "in
    #   flight", so the next run resends them and reports them as possibly doubled -- never lost;
    # - forget (dead-lettered): committed at once, as before.
    ahead = max(1, min(int(getattr(hec, "max_batch_events", 500) or 500), 500))
    unsent: deque = deque()  # marked in flight, not yet handed to the HEC client

    delivered_marks: list = []  # (backfill_id, maybe_doubled) accepted by HEC, written at the next commit

    def commit() -> None:
        if delivered_marks:
            if not db.in_transaction:
                db.execute("BEGIN")
            ledger.mark_delivered_many(opts.index, delivered_marks)
            delivered_marks.clear()
        if db.in_transaction:
            db.execute("COMMIT")

    def outgoing() -> Iterator:
        filtered = _ledger_filter(cands, ledger, ledger, opts, report, log)
        while True:
            commit()  # the delivered marks of the POSTs answered so far
            db.execute("BEGIN")
            for c in filtered:
                unsent.append(c)
                if len(unsent) >= ahead or opts.stopping():
                    break
            commit()  # the in-flight marks: durable before any of these events is handed over
            if not unsent:
                return
            while unsent:
                if opts.stopping():  # read no further; what is left in `unsent` is forgotten below
                    return
                c = unsent[0]
                pending[c.backfill_id] = c
                unsent.popleft()
                yield Outgoing(c.backfill_id, c.data)
                commit()

    def fail(c: Candidate, reason: str, maybe_sent: bool = False) -> None:
        dead.write(c.body, c.backfill_id, reason, maybe_sent)
        if maybe_sent:  # stays "in flight": a replay or rerun resends it and names it as a possible double
            report.maybe_sent += 1
        else:
            ledger.forget(opts.index, c.backfill_id)
        commit()
        report.failed += 1
        report.dead_reasons[reason] += 1
        report.dead_letter_path = str(dead.path)
        report.replay_command = opts.replay_command(dead.path)

    gen = outgoing()
    try:
        for res in hec.deliver(gen):
            c = pending.pop(res.id, None)
            if c is None:
                continue
            if res.status == "delivered":
                delivered_marks.append((c.backfill_id, res.maybe_doubled))
                report.delivered += 1
                if res.maybe_doubled:
                    report.maybe_doubled.append(c.backfill_id)
                _account(report, c)
                _emit(output, c, stdout, table, "sent")
            else:
                fail(c, res.reason or "not delivered", res.maybe_doubled)
                if opts.verbose:
                    log(f"failed {c.backfill_id} from {c.origin}: {res.reason}")
    except HECFatalError as exc:
        report.fatal = str(exc)
        opts.index_refused = exc.setting == "index"
        reason = f"not sent: the run stopped: {exc}"
        maybe = hec.unconfirmed_may_have_arrived()
        for c in list(pending.values()):
            fail(c, reason if c.backfill_id not in maybe else f"not confirmed: the run stopped: {exc}",
                 c.backfill_id in maybe)
        pending.clear()
        for _ in gen:  # the rest of the input goes to the dead letters too: nothing is lost
            pass
        for c in list(pending.values()):
            fail(c, reason)
        pending.clear()
    finally:
        commit()
        interrupted = len(pending)
        maybe = hec.unconfirmed_may_have_arrived() if pending else set()
        unsure = sum(1 for c in pending.values() if c.backfill_id in maybe)
        for c in list(pending.values()):  # interrupted: whatever was handed over but not resolved
            if c.backfill_id in maybe:
                fail(c, "not confirmed: the run was interrupted while HEC may have received it", True)
            else:
                fail(c, "not sent: the run was interrupted")
        if interrupted:
            log(f"interrupted: {interrupted} events on their way to HEC, not confirmed, were written to {dead.path}"
                f" (resend them with: {opts.replay_command(dead.path)})"
                + (f"; {unsure} of them may have reached HEC all the same: the replay names them as possible"
                   " doubles" if unsure else ""))
        for c in unsent:  # marked in flight but never handed to HEC: not in flight after all
            ledger.forget(opts.index, c.backfill_id)
        commit()
        dead.close()


class _Table:
    """The dry-run preview: one row per event, fixed columns, readable in a terminal."""

    HEADER = (f"{'TIME (UTC)':<24} {'ERA':<3} {'LIVE SEND':<10} {'SUBKEY':<23} {'NAME':<18} {'MODEL':<14}"
              f" {'PROMPT':>7} {'COMPL':>7} {'TOTAL':>7}  ACTION")

    def __init__(self, fh):
        self.fh = fh
        self.n = 0

    def row(self, c: Candidate, action: str) -> None:
        if self.n == 0:
            self.fh.write(self.HEADER + "\n")
        self.n += 1
        e = c.body["event"]
        t = c.body.get("time")
        name = (e.get("friendly_name") or "-")[:18]
        model = str(e.get("model") or "-")[:14]
        if c.kind == "error":
            tok = f"{'error: ' + str(e.get('error_type'))[:16]:>23}"
        else:
            tok = f"{_n(e.get('prompt_tokens')):>7} {_n(e.get('completion_tokens')):>7} {_n(e.get('total_tokens')):>7}"
        self.fh.write(f"{display_utc(t) if t else '-':<24} {c.era:<3} {c.outcome:<10} {str(e.get('subkey'))[:23]:<23}"
                      f" {name:<18} {model:<14} {tok}  {action}\n")

    def close(self) -> None:
        if self.n == 0:
            self.fh.write("(no events selected)\n")
        self.fh.flush()


def _n(v) -> str:
    return "-" if v is None else str(v)


class _Progress:
    """A one-line progress meter on stderr, only when it is a terminal."""

    def __init__(self, report: BackfillReport, enabled: Optional[bool]):
        self.report = report
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.last = time.monotonic()
        self.shown = False

    def tick(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            r = self.report
            sys.stderr.write(f"\r  read {r.read.lines:,} lines, {r.read.bytes / 1e6:,.0f} MB;"
                             f" found {sum(r.found.values()):,} events ")
            sys.stderr.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()


# -- the script's one entry point --------------------------------------------------------------
def make_hec(settings, args, stderr: TextIO, stop: Optional[threading.Event] = None):
    """The SplunkHEC client the scripts' delivery flags describe (flags a script lacks: defaults)."""
    from .splunk_hec import SplunkHEC

    def flag(name, default=None):
        value = getattr(args, name, None)
        return default if value is None else value

    return SplunkHEC(
        settings.hec_url, settings.hec_token, index=settings.index, sourcetype=settings.sourcetype,
        source=settings.source, verify=settings.verify_ssl, timeout=flag("timeout", 10.0),
        max_batch_bytes=flag("batch_bytes", 900_000), max_batch_events=flag("batch_size", 500),
        gzip=not flag("no_gzip", False), retry_for=flag("retry_for", 300.0), ack=True if flag("ack") else None,
        ack_timeout=flag("ack_timeout", 120.0), max_eps=flag("max_eps"), verbose=flag("verbose", False),
        log=lambda m: print(m, file=stderr), stop=stop)


def _replay_flags(args) -> tuple:
    """The flags of this run that a replay of its dead letters must repeat to go the same way."""
    return tuple((flag, v) for flag, v in (("--ledger", args.ledger), ("--env-file", args.env_file),
                                           ("--index", args.index), ("--sourcetype", args.sourcetype),
                                           ("--ca-bundle", args.ca_bundle)) if v)


def run_from_args(args, stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None,
                  stop: Optional[threading.Event] = None) -> int:
    """Resolve settings from parsed ``backfill_hec.py`` arguments, run, print the report; exit code."""
    from .config import load_settings
    from .journal import parse_zone
    from .timespec import parse_date, parse_when

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    settings = load_settings(args.env_file, overrides={
        "index": args.index, "sourcetype": args.sourcetype, "db_path": args.db,
        # a dry run talks to no HEC: a bad SPLUNK_VERIFY_SSL must not stop the preview
        "verify_ssl": args.ca_bundle if (args.check or not args.dry_run) else True})
    if args.utc and args.tz and args.tz.upper() not in ("UTC", "ETC/UTC", "Z"):
        raise ConfigError(f"--utc and --tz {args.tz} name different zones: give one of them")
    zone = parse_zone(args.tz, args.utc)
    year = args.year
    if args.date:
        date_year = parse_date(args.date).year
        if year and year != date_year:
            raise ConfigError(f"--date {args.date} and --year {year} name different years: give one of them")
        year = date_year
    opts = BackfillOptions(
        inputs=list(args.inputs) or ["-"], zone=zone, year=year, dry_run=args.dry_run, verbose=args.verbose,
        only_failed=args.only_failed, include_errors=args.include_errors,
        since=parse_when(args.since, zone) if args.since else None,
        until=parse_when(args.until, zone) if args.until else None,
        output=args.output, reason=args.reason, index=settings.index, sourcetype=settings.sourcetype,
        source=settings.source, db_path=settings.db_path, ledger_path=args.ledger, force=args.force,
        replay=args.replay, dead_letter_path=args.dead_letter, progress=args.progress,
        replay_flags=_replay_flags(args), stop=stop, date=args.date)
    if opts.since is not None and opts.until is not None and opts.since >= opts.until:
        raise ConfigError("--since must be before --until")
    for path in opts.inputs + ([opts.replay] if opts.replay else []):  # before anything is sent: no half run
        if path == "-":
            continue
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory, not a file")
        if not os.path.exists(path):  # a pipe (<(zcat ...)) or FIFO exists without being a regular file
            raise InputError(f"{path}: no such file")
    for warning in settings.warnings:
        print(f"backfill_hec.py: warning: {warning}", file=stderr)
    try:
        opts.destination = destination_of(settings.hec_url)
    except ConfigError:
        if not opts.dry_run:
            raise

    names, warning = None, None
    if args.no_names:
        warning = "--no-names: no database read; events keep only the names the service itself logged"
    elif not opts.replay and not args.check:
        from .names import NamesUnavailable, NoNamesTable, name_lookup

        try:
            names = name_lookup(opts.db_path)
        except NamesUnavailable as exc:
            if "db_path" in settings.given and not isinstance(exc, NoNamesTable):
                # a database named for this run (--db, QUOTA_DB_PATH) that cannot be read: events sent
                # without names could not be sent again with them (the ledger has them): stop first
                where = "--db" if args.db else "QUOTA_DB_PATH"
                raise ConfigError(f"{where}: {exc}; fix it, or give --no-names to send without"
                                  " friendly_name/email") from None
            warning = f"{exc}; events go without friendly_name/email"  # the report says it
    hec = None
    if args.check or not opts.dry_run:
        settings.require_hec()
        hec = make_hec(settings, args, stderr, stop)
        if args.check:
            with hec:
                problems = hec.check()
            for line in problems:
                print(f"problem: {line}", file=stderr)
            if not problems:
                print("HEC is healthy and the token is accepted", file=stderr)
            return 2 if problems else 0

    try:
        report = run_backfill(opts, hec=hec, names=names, names_warning=warning, stdout=stdout, stderr=stderr)
    finally:
        if hec is not None:
            hec.close()
    if not opts.replay and not report.read.lines and not report.fatal:
        raise InputError("the input is empty (0 lines): nothing to backfill; did the journalctl command fail"
                         " (it needs sudo, or membership of group systemd-journal)?")
    print(report.render(), file=stderr)
    return report.exit_code
