"""True-up: compare the provider's usage totals with Splunk's (or the database's), send positive-only corrections.

Per model and month: when the current total is below the reference total, one correction event
carries reference minus current for each of total/prompt/completion (never below zero); when the
current total is equal or higher, nothing is sent for that model. Corrections are ready-made HEC
bodies handed to ``backfill.run_backfill(bodies=...)``: the same ledger (exactly once, keyed on
``backfill_id``), retries and dead letters as the backfill.

The ``backfill_id`` of a correction is derived from (month, hashed subkey, model, adjustment
amounts) only, so re-running with the same inputs never sends it twice, while a later, different
shortfall for the same model and month gets a new id.
"""
from __future__ import annotations

import csv
import json
import re
import sqlite3
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional, TextIO
from urllib.parse import urlsplit

from .errors import ConfigError, InputError
from .events import encode, hash_subkey, stable_id
from .timespec import iso_to_epoch, iso_utc

DEFAULT_REASON = "true-up to provider usage report"
ID_KIND = "trueup"

# column names, normalised (lower case, letters and digits only) -> field
_COLUMNS = {
    "model": "model",
    "month": "month", "usagemonth": "month",
    "tier": "tier",
    "totaltokens": "total", "total": "total",
    "prompttokens": "prompt", "prompt": "prompt",
    "completiontokens": "completion", "completion": "completion",
}
_REQUIRED = ("model", "month", "total", "prompt", "completion")
_TITLES = {"model": "Model", "month": "Month", "tier": "Tier", "total": "Total Tokens",
           "prompt": "Prompt Tokens", "completion": "Completion Tokens"}

_COUNT_RE = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.0*)?")
_MONTH_RE = re.compile(r"(\d{4})-(\d{2})(?:-01)?")

SPL_TEMPLATE = """index={index} sourcetype="{sourcetype}" 
  earliest={start} latest={end}
  NOT (backfill=true backfill_live_send=delivered)
| eval month=strftime(_time, "%Y-%m-01")
| stats 
    sum(total_tokens) as "Total Tokens"
    sum(prompt_tokens) as "Prompt Tokens"
    sum(completion_tokens) as "Completion Tokens"
    by model, month
| eval tier="prem_tier"
| rename model as "Model", month as "Month", tier as "Tier"
| table "Model" "Month" "Tier" "Total Tokens" "Prompt Tokens" "Completion Tokens"
| sort - "Total Tokens\""""


# -- values ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tokens:
    total: int = 0
    prompt: int = 0
    completion: int = 0

    def __add__(self, other: "Tokens") -> "Tokens":
        return Tokens(self.total + other.total, self.prompt + other.prompt, self.completion + other.completion)

    def shortfall(self, current: "Tokens") -> "Tokens":
        """self minus current, each never below zero."""
        return Tokens(max(0, self.total - current.total), max(0, self.prompt - current.prompt),
                      max(0, self.completion - current.completion))

    def as_dict(self) -> dict:
        return {"total": self.total, "prompt": self.prompt, "completion": self.completion}


@dataclass
class Totals:
    """One model and month of one input (rows of several tiers summed)."""
    model: str
    month: str
    tokens: Tokens
    tiers: list = field(default_factory=list)
    origin: str = ""


@dataclass
class Line:
    """One row of the side-by-side table; ``body`` is the correction's HEC body when there is one."""
    model: str
    month: str
    tier: str
    reference: Optional[Tokens]
    current: Optional[Tokens]
    adjustment: Optional[Tokens] = None
    status: str = ""
    backfill_id: Optional[str] = None
    body: Optional[dict] = None


def parse_count(value, where: str) -> int:
    """A token count: 3683, "3,683", "3683.0"; blank is 0. Negative or non-numeric raises InputError."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InputError(f"{where}: {json.dumps(value)} is not a number")
    if isinstance(value, int):
        if value < 0:
            raise InputError(f"{where}: {value} is negative: token counts are never below zero")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or value != int(value):
            raise InputError(f"{where}: {value!r} is not a whole number")
        return parse_count(int(value), where)
    text = str(value).strip()
    if text == "":
        return 0
    body = text[1:].strip() if text[0] in "+-" else text
    m = _COUNT_RE.fullmatch(body)
    if not m:
        raise InputError(f"{where}: {text!r} is not a whole number (thousands separators like 3,683 are fine)")
    n = int(m.group(1).replace(",", ""))
    if text.startswith("-") and n != 0:
        raise InputError(f"{where}: {text!r} is negative: token counts are never below zero")
    return n


def parse_month(value, where: str) -> str:
    """'2026-01' or '2026-01-01' (what the guide's SPL prints) -> '2026-01'."""
    text = "" if value is None else str(value).strip()
    m = _MONTH_RE.fullmatch(text)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise InputError(f"{where}: {text!r} is not a month (use YYYY-MM or YYYY-MM-01)")
    return f"{m.group(1)}-{m.group(2)}"


def month_bounds(month: str) -> tuple[datetime, datetime]:
    y, m = int(month[:4]), int(month[5:7])
    start = datetime(y, m, 1, tzinfo=timezone.utc)
    end = datetime(y + (m == 12), 1 if m == 12 else m + 1, 1, tzinfo=timezone.utc)
    return start, end


def _norm(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name or "").lower())


# -- reading -----------------------------------------------------------------------------------
def _records(path: Path, label: str):
    """(row label, {field: raw value}) for every row of a CSV or JSON file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{label} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{label} {path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    stripped = text.lstrip()
    if path.suffix.lower() in (".json", ".ndjson", ".jsonl") or stripped[:1] in ("[", "{"):
        yield from _json_records(text, path, label)
    else:
        yield from _csv_records(text, path, label)


def _map_columns(names: Iterable, path: Path, label: str) -> dict:
    mapping = {}
    for name in names:
        f = _COLUMNS.get(_norm(name))
        if f and f not in mapping.values():
            mapping[name] = f
    missing = [_TITLES[f] for f in _REQUIRED if f not in mapping.values()]
    if missing:
        raise InputError(f"{label} {path}: no column {', '.join(repr(m) for m in missing)} (expected columns: "
                         "Model, Month, Tier (optional), Total Tokens, Prompt Tokens, Completion Tokens)")
    return mapping


def _csv_records(text: str, path: Path, label: str):
    reader = csv.reader(text.splitlines())
    header = None
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip() for c in row]
            mapping = _map_columns(header, path, label)
            cols = {i: mapping[h] for i, h in enumerate(header) if h in mapping}
            names = {mapping[h]: h for h in header if h in mapping}
            continue
        if len(row) > len(header) and any(c.strip() for c in row[len(header):]):
            raise InputError(f"{path} row {reader.line_num}: {len(row)} fields but the header has {len(header)} "
                             '(a number with a thousands separator must be quoted: "3,683")')
        rec = {f: (row[i] if i < len(row) else "") for i, f in cols.items()}
        yield f"{path} row {reader.line_num}", rec, names
    if header is None:
        raise InputError(f"{label} {path}: the file is empty (expected a header row: Model, Month, Tier, "
                         "Total Tokens, Prompt Tokens, Completion Tokens)")


def _json_records(text: str, path: Path, label: str):
    """A JSON array of objects, {"results": [...]} (Splunk REST) or NDJSON {"result": {...}} (Splunk export)."""
    try:
        docs = [json.loads(text)]
    except (ValueError, RecursionError):
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except (ValueError, RecursionError) as exc:
                    raise InputError(f"{label} {path} line {n}: not JSON: {getattr(exc, 'msg', exc)}") from None
    objs = []
    for d in docs:
        if isinstance(d, dict) and isinstance(d.get("results"), list):
            objs.extend(d["results"])
        elif isinstance(d, dict) and isinstance(d.get("result"), dict):
            objs.append(d["result"])
        elif isinstance(d, list):
            objs.extend(d)
        else:
            objs.append(d)
    for n, obj in enumerate(objs, 1):
        if not isinstance(obj, dict):
            raise InputError(f"{label} {path} row {n}: not an object with Model, Month, Total Tokens, ...")
        mapping = _map_columns(obj.keys(), path, label)
        names = {f: k for k, f in mapping.items()}
        yield f"{path} row {n}", {f: obj[k] for k, f in mapping.items()}, names


def read_totals(path, label: str) -> dict:
    """{(model, month): Totals} from a CSV or JSON file; rows of different tiers are summed."""
    path = Path(path)
    out: dict = {}
    seen: dict = {}
    for where, rec, names in _records(path, label):
        def at(f):
            return f'{where} column "{names.get(f, _TITLES[f])}"'
        model = str(rec.get("model") or "").strip()
        if not model:
            raise InputError(f"{at('model')}: the model is blank")
        month = parse_month(rec.get("month"), at("month"))
        tier = str(rec.get("tier") or "").strip()
        tokens = Tokens(parse_count(rec.get("total"), at("total")), parse_count(rec.get("prompt"), at("prompt")),
                        parse_count(rec.get("completion"), at("completion")))
        key = (model, month, tier)
        if key in seen:
            raise InputError(f"{where}: {model} {month}{' tier ' + tier if tier else ''} appears twice "
                             f"(also {seen[key]}): remove one")
        seen[key] = where
        t = out.get((model, month))
        if t is None:
            out[(model, month)] = Totals(model, month, tokens, [tier] if tier else [], where)
        else:
            t.tokens = t.tokens + tokens
            if tier:
                t.tiers.append(tier)
    return out


def read_db(db_path, months: Optional[set] = None) -> dict:
    """{(model, month): Totals} from the service's ``monthly_usage`` (read-only), summed over subkeys."""
    p = Path(db_path)
    if not p.is_file():
        raise ConfigError(f"database {db_path}: no such file (give --db PATH or set QUOTA_DB_PATH)")
    try:
        con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"database {db_path}: cannot open read-only: {exc}") from None
    try:
        rows = con.execute(
            "SELECT model, usage_month, SUM(total_tokens), SUM(prompt_tokens), SUM(completion_tokens) "
            "FROM monthly_usage GROUP BY model, usage_month").fetchall()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            raise ConfigError(f"database {db_path}: no table monthly_usage (this service version keeps no "
                              "monthly totals; export from Splunk and use --splunk FILE)") from None
        raise ConfigError(f"database {db_path}: {exc}") from None
    finally:
        con.close()
    out: dict = {}
    for model, month_text, total, prompt, completion in rows:
        where = f"{db_path} monthly_usage model {model!r} month {month_text!r}"
        month = parse_month(month_text, where)
        if months and month not in months:
            continue
        tokens = Tokens(parse_count(total, where + " total_tokens"), parse_count(prompt, where + " prompt_tokens"),
                        parse_count(completion, where + " completion_tokens"))
        key = (str(model), month)
        if key in out:
            out[key].tokens = out[key].tokens + tokens
        else:
            out[key] = Totals(str(model), month, tokens, [], where)
    return out


# -- the rule ----------------------------------------------------------------------------------
def trueup_id(month: str, subkey_hashed: str, model: str, adj: Tokens) -> str:
    """Stable id of one correction: the same inputs give the same id, a different shortfall a new one."""
    return stable_id(ID_KIND, month, subkey_hashed, model, adj.total, adj.prompt, adj.completion)


def correction_time(month: str, date_text: Optional[str]) -> float:
    """Epoch seconds of a correction: --date, else the 15th 00:00 UTC (in the month in every zone)."""
    start, end = month_bounds(month)
    if not date_text:
        return start.replace(day=15).timestamp()
    try:
        when = iso_to_epoch(date_text)
    except ValueError:
        raise ConfigError(f"--date {date_text!r}: use YYYY-MM-DD or an ISO time like 2026-01-15T00:00:00Z") from None
    dt = datetime.fromtimestamp(when, timezone.utc)
    if not start <= dt < end:
        raise ConfigError(f"--date {date_text} is not in {month} (UTC): a correction must fall in the month "
                          "it corrects (with several months, leave --date out or use --month)")
    return dt.timestamp()


def reconcile(reference: dict, current: dict) -> list[Line]:
    """The side-by-side lines, in the reference's order, then models only the current side has."""
    lines = []
    for (model, month), ref in reference.items():
        cur = current.get((model, month))
        cur_tokens = cur.tokens if cur else Tokens()
        line = Line(model, month, "+".join(ref.tiers), ref.tokens, cur_tokens)
        if cur_tokens.total < ref.tokens.total:
            line.adjustment = ref.tokens.shortfall(cur_tokens)
            line.status = "correction"
        elif cur_tokens.total == ref.tokens.total:
            line.status = "ok: equal"
        else:
            line.status = "ok: current higher"
        lines.append(line)
    months = {m for _, m in reference}
    for (model, month), cur in current.items():
        if month in months and (model, month) not in reference:
            lines.append(Line(model, month, "+".join(cur.tiers), None, cur.tokens, None, "not in reference"))
    return lines


def correction_body(line: Line, *, subkey_hashed: str, when: float, reason: str, index: str, sourcetype: str,
                    source: str) -> dict:
    """The HEC body of one correction (no host: it was not logged by any host)."""

    adj = line.adjustment
    bid = trueup_id(line.month, subkey_hashed, line.model, adj)
    event = {
        "subkey": subkey_hashed,
        "model": line.model,
        "requests": 0,
        "prompt_tokens": adj.prompt,
        "completion_tokens": adj.completion,
        "total_tokens": adj.total,
        "timestamp": iso_utc(when),
        "backfill": True,
        "trueup": True,
        "backfill_reason": reason,
        "backfill_id": bid,
        "trueup_month": line.month,
    }
    return {"time": round(when, 6), "source": source, "sourcetype": sourcetype, "index": index, "event": event}


def spl(month: str, index: str = "oai_circuit", sourcetype: str = "llm:usage") -> str:
    """The guide's SPL that produces the Splunk export for one month.

    Two changes from the guide: the month's bounds are epoch seconds (UTC, where Splunk would read
    "2026-01-01T00:00:00" in the searcher's zone, if at all: its exact-time format is
    %m/%d/%Y:%H:%M:%S), and backfilled copies of events the live service had already delivered
    are left out, so that a backfill does not make Splunk's totals look higher than they are.
    """
    start, end = month_bounds(month)
    return SPL_TEMPLATE.format(index=index, sourcetype=sourcetype, start=int(start.timestamp()),
                               end=int(end.timestamp()))


# -- output ------------------------------------------------------------------------------------
def _fmt(n: Optional[int]) -> str:
    return "-" if n is None else f"{n:,}"


def render_table(lines: list[Line], current_label: str) -> str:
    groups = (("REFERENCE", lambda l: l.reference), (current_label.upper(), lambda l: l.current),
              ("ADJUSTMENT", lambda l: l.adjustment))
    head = ["MODEL", "MONTH", "TIER"]
    sub = []
    for _, _ in groups:
        sub += ["TOTAL", "PROMPT", "COMPLETION"]
    rows = []
    for l in lines:
        cells = [l.model, l.month, l.tier or "-"]
        for _, get in groups:
            t = get(l)
            cells += [_fmt(t.total if t else None), _fmt(t.prompt if t else None), _fmt(t.completion if t else None)]
        cells.append(l.status)
        rows.append(cells)
    header = head + sub + ["STATUS"]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for g in range(3):  # each group at least as wide as its title
        i = 3 + 3 * g
        need = len(groups[g][0]) - (sum(widths[i:i + 3]) + 4)
        if need > 0:
            widths[i] += need

    def fmt(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if 3 <= i < 12 else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lead = sum(widths[:3]) + 2 * 3
    title = " " * lead
    for g, (name, _) in enumerate(groups):
        i = 3 + 3 * g
        span = sum(widths[i:i + 3]) + 4
        title += name.center(span) + ("  " if g < 2 else "")
    out = [title.rstrip(), fmt(header)]
    out += [fmt(r) for r in rows]
    return "\n".join(out)


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Plan:
    lines: list
    months: list
    bodies: list
    current_label: str


def build_plan(args, settings, log) -> Plan:
    months_filter = {parse_month(args.month, "--month")} if args.month else None
    reference = read_totals(args.reference, "--reference")
    if months_filter:
        reference = {k: v for k, v in reference.items() if k[1] in months_filter}
    if not reference:
        raise InputError(f"--reference {args.reference}: no rows"
                         f"{' for ' + args.month if args.month else ''}")
    months = sorted({m for _, m in reference})
    if args.splunk:
        current = read_totals(args.splunk, "--splunk")
        current_label, source_desc = "splunk", f"--splunk {args.splunk}"
    else:
        current = read_db(args.db or settings.db_path, set(months))
        current_label, source_desc = "database", f"monthly_usage in {args.db or settings.db_path}"
    current = {k: v for k, v in current.items() if k[1] in months}
    uncovered = [m for m in months if not any(k[1] == m for k in current)]
    if uncovered:
        fix = ("export it, limit the work with --month, or add explicit rows with 0 for a month Splunk really "
               "lacks" if args.splunk else "wrong database? or limit the work with --month")
        raise InputError(f"{source_desc} has no rows for {', '.join(uncovered)}: it does not cover "
                         f"{'that month' if len(uncovered) == 1 else 'those months'} ({fix})")
    if not args.splunk:
        log("note: the database never sees true-up corrections (they go to Splunk only): a correction already "
            "sent is not sent again because the ledger has it, but if the reference changes, compare with a "
            "fresh Splunk export (--splunk) instead")
    lines = reconcile(reference, current)
    corr = [l for l in lines if l.adjustment is not None]
    if args.date and len({l.month for l in corr}) > 1:
        raise ConfigError("--date sets one time for corrections in several months: use --month, or leave "
                          "--date out (the 15th of each month)")

    subkey = hash_subkey(args.subkey or settings.backfill_subkey)
    bodies = []
    for l in corr:
        when = correction_time(l.month, args.date)
        start, end = month_bounds(l.month)
        if args.date and l is corr[0] and not (start.timestamp() + 12 * 3600 <= when < end.timestamp() - 14 * 3600):
            log(f"warning: --date {args.date} is within 12 hours of the month's start or 14 of its end (zones run"
                f" from UTC-12 to UTC+14): in some time zones "
                f"Splunk shows it in another month than {l.month}")
        a = l.adjustment
        if a.prompt + a.completion != a.total:
            log(f"warning: {l.model} {l.month}: the adjustment's prompt + completion "
                f"({a.prompt:,} + {a.completion:,}) differ from its total ({a.total:,}); "
                "each is reference minus current, never below zero")
        l.body = correction_body(l, subkey_hashed=subkey, when=when, reason=args.reason or DEFAULT_REASON,
                                 index=settings.index, sourcetype=settings.sourcetype, source=settings.source)
        l.backfill_id = l.body["event"]["backfill_id"]
        bodies.append(l.body)
    return Plan(lines, months, bodies, current_label)


def _collector_hosts(url_setting: str) -> str:
    from .splunk_hec import collector_urls

    return ", ".join(urlsplit(u).netloc for u in collector_urls(url_setting))


def _confirm(n: int, index: str, hosts: str, stdin, stderr) -> bool:
    stderr.write(f"Send {n} correction event{'s' if n != 1 else ''} to {index} at {hosts}? [y/N] ")
    stderr.flush()
    try:
        answer = stdin.readline()
    except EOFError:
        answer = ""
    if not answer.endswith("\n"):
        stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def _json_doc(plan: Plan, *, dry_run: bool, result: Optional[dict]) -> str:
    rows = []
    for l in plan.lines:
        rows.append({"model": l.model, "month": l.month, "tier": l.tier or None,
                     "reference": l.reference.as_dict() if l.reference else None,
                     "current": l.current.as_dict() if l.current else None,
                     "adjustment": l.adjustment.as_dict() if l.adjustment else None,
                     "status": l.status, "backfill_id": l.backfill_id})
    doc = {"months": plan.months, "current_source": plan.current_label, "dry_run": dry_run, "rows": rows,
           "corrections": plan.bodies, "result": result}
    return json.dumps(doc, ensure_ascii=False, indent=2)


def run_from_args(args, stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None,
                  stdin: Optional[TextIO] = None) -> int:
    """Resolve settings from parsed ``trueup_hec.py`` arguments, reconcile, confirm, send; exit code."""
    from .backfill import BackfillOptions, destination_of, make_hec, run_backfill
    from .cli import stop_on_signals
    from .config import load_settings
    from .ledger import Ledger, default_ledger_path

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    stdin = stdin or sys.stdin

    def log(msg: str) -> None:
        print(msg, file=stderr)

    settings = load_settings(args.env_file, overrides={
        "index": args.index, "sourcetype": args.sourcetype, "db_path": args.db, "verify_ssl": args.ca_bundle if not (args.dry_run or args.print_spl) else True})

    if args.print_spl:
        if not args.month:
            raise ConfigError("--print-spl needs --month YYYY-MM")
        print(spl(parse_month(args.month, "--month"), settings.index, settings.sourcetype), file=stdout)
        return 0
    if not args.reference:
        raise ConfigError("give the provider's totals with --reference FILE")
    if bool(args.splunk) == bool(args.from_db):
        raise ConfigError("give the current totals with exactly one of --splunk FILE or --from-db")

    if not args.dry_run:
        settings.require_hec()  # before anything is shown as "send"
    for warning in settings.warnings:
        log(f"trueup_hec.py: warning: {warning}")
    plan = build_plan(args, settings, log)
    ledger_path = Path(args.ledger) if args.ledger else default_ledger_path()

    # what the ledger already has (read-only look; run_backfill checks again while sending)
    todo = []
    if plan.bodies:
        ledger = Ledger(ledger_path, "trueup-check", readonly=True)
        try:
            for l in plan.lines:
                if l.body is None:
                    continue
                seen = ledger.lookup(settings.index, l.backfill_id)  # exactly once per index
                if seen and seen[0] == "delivered" and not args.force:
                    l.status = "already sent"
                else:
                    l.status = "would send" if args.dry_run else "send"
                    todo.append(l.body)
        finally:
            ledger.close()

    def show(result=None) -> None:
        if args.output == "json":
            print(_json_doc(plan, dry_run=args.dry_run, result=result), file=stdout)

    if args.output == "table":
        print(render_table(plan.lines, plan.current_label), file=stdout)
        if args.dry_run and todo:

            print("", file=stdout)
            for b in todo:  # the exact HEC bodies that a real run would send
                print(encode(b).decode("utf-8"), file=stdout)
        stdout.flush()

    if not plan.bodies:
        show()
        log("no corrections needed: the current totals are at or above the reference for every model")
        return 0
    sent_before = len(plan.bodies) - len(todo)
    if not todo:
        show()
        log(f"nothing to send: {sent_before} correction{'s were' if sent_before != 1 else ' was'} already sent "
            f"by an earlier run (ledger {ledger_path}); export again from Splunk to check they arrived")
        return 0
    if args.dry_run:
        show()
        log(f"DRY RUN: {len(todo)} correction event{'s' if len(todo) != 1 else ''} shown, nothing sent"
            + (f"; {sent_before} already sent by an earlier run" if sent_before else ""))
        return 0

    hosts = _collector_hosts(settings.hec_url)
    if not args.yes:
        if not (hasattr(stdin, "isatty") and stdin.isatty()):
            raise ConfigError(f"refusing to send {len(todo)} correction event{'s' if len(todo) != 1 else ''} "
                              "without confirmation: standard "
                              "input is not a terminal; check with --dry-run, then pass --yes")
        if not _confirm(len(todo), settings.index, hosts, stdin, stderr):
            show()
            log("not sent: you did not answer y")
            return 0

    opts = BackfillOptions(
        dry_run=False, verbose=args.verbose, output="none", reason=args.reason or DEFAULT_REASON,
        index=settings.index, sourcetype=settings.sourcetype, source=settings.source, db_path=settings.db_path,
        ledger_path=str(ledger_path), force=args.force, dead_letter_path=args.dead_letter, progress=False,
        destination=destination_of(settings.hec_url))
    with stop_on_signals("trueup_hec.py") as stop:  # SIGTERM / Ctrl-C: the POST on the wire is finished first
        opts.stop = stop
        hec = make_hec(settings, args, stderr, stop)
        try:
            report = run_backfill(opts, hec=hec, stdout=stdout, stderr=stderr, bodies=todo)
        finally:
            hec.close()

    result = {"delivered": report.delivered, "failed": report.failed, "already_sent": report.already_sent,
              "dead_letter_path": report.dead_letter_path, "maybe_doubled": report.maybe_doubled,
              "ledger": report.ledger_path, "stopped": report.fatal}
    show(result)
    log(f"sent to {settings.index} at {hosts}: delivered {report.delivered}, failed {report.failed}"
        + (f", already sent {report.already_sent}" if report.already_sent else "") + f" (ledger {report.ledger_path})")
    if report.resent_after_crash:
        log(f"note: {len(report.resent_after_crash)} corrections were left unconfirmed by an earlier run; "
            "they were sent again and may be doubled: search with | dedup backfill_id")
    if report.maybe_doubled:
        log(f"doubles?: {len(report.maybe_doubled)} corrections were resent after an ambiguous send; "
            "search with | dedup backfill_id")
    if report.doubles_path:
        log(f"           their backfill_ids are in {report.doubles_path}")
    if report.dead_letter_path:
        log(f"dead letters: {report.failed} corrections written to {report.dead_letter_path}; "
            f"resend them with: {report.replay_command}")
    if report.fatal:
        log(f"STOPPED: {report.fatal}")
    if report.stopped:
        log(f"STOPPED: {'on request' if report.stopped == 'request' else 'at once'} (SIGTERM or Ctrl-C): run the same"
            " command again to send what is left (the ledger skips what was delivered)")
    if report.delivered:
        months = " OR ".join(f"trueup_month={m}" for m in plan.months)
        log("verify in Splunk:")
        first, _ = month_bounds(min(plan.months))
        _, last = month_bounds(max(plan.months))
        log(f'  index={settings.index} sourcetype="{settings.sourcetype}" trueup=true ({months})'
            f" earliest={int(first.timestamp())} latest={int(last.timestamp())} | dedup backfill_id | table _time model total_tokens prompt_tokens completion_tokens backfill_id")
        log(f"then export again (trueup_hec.py --print-spl --month {plan.months[0]}) and re-run with the new "
            "export: it should say \"no corrections needed\"")
    return report.exit_code
