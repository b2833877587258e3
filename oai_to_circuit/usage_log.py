"""JournalEntry stream -> UsageRecord: one record per event the service tried to send to HEC.

Recognises every shape the service has logged (eras A, B, C, D of LOG_SHAPES.md). One event
shows up in one to five lines (a ``Starting`` summary, a multi-line ``Full HEC payload`` block,
``Sending POST``, the outcome); they are joined per worker process, by identity (subkey, model,
error type) where the outcome line carries it, in order where it does not (era A).

Output schema (``UsageRecord``)::

    kind          "usage" | "error"
    era           "A" | "B" | "C" | "D"
    outcome       "delivered" | "failed" | "uncertain" (timeout: the body may have arrived)
                  | "unknown" (the service logged no outcome, e.g. era C at INFO)
    detail        what the service said about the outcome ("http 503 ...", "timeout", ...)
    event         dict: the event fields as the service logged them (full JSON when logged,
                  else rebuilt from the summary line); subkey as logged (raw or sha256:)
    time          float: the ORIGINAL event time, epoch seconds
    time_source   "payload" (HEC time) | "timestamp" (event ISO time) | "asctime" | "journal"
    full_json     bool: the event's full JSON was in the log
    host, worker_pid, anchor (asctime text of the attempt's first line), line_no, source
"""
from __future__ import annotations

import calendar
import json
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Iterable, Iterator, Optional

from .events import hash_subkey
from .journal import JournalEntry
from .timespec import iso_to_epoch

SERVICE_RE = re.compile(
    r"^(?P<level>[A-Z]+):\s+(?P<asctime>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - "
    r"(?P<proc>.*?)\[\s*(?P<wpid>\d+)\] - (?P<logger>\S+)\s* - (?P<text>.*)$", re.S)
LEVEL_PREFIX_RE = re.compile(r"^[A-Z]+:\s")

# Lines that open an attempt
START_RE = re.compile(
    r"Starting Splunk HEC export - subkey=(?P<subkey>[^,\s]+), model=(?P<model>[^,]+?), "
    r"tokens=(?P<total>\d+) \(prompt=(?P<prompt>\d+), completion=(?P<completion>\d+)\)"
    r"(?:, source=(?P<source>.*?))?, url=(?P<url>\S*)$")
START_ERR_RE = re.compile(
    r"Starting Splunk HEC error export - error_type=(?P<error_type>[^,\s]+), subkey=(?P<subkey>[^,\s]+), "
    r"model=(?P<model>[^,]+?)(?:, source=(?P<source>.*?))?, url=(?P<url>\S*)$")
FORWARD_RE = re.compile(
    r"^Forwarding usage event to Splunk HEC at (?P<url>\S+): subkey=(?P<subkey>[^,\s]+), "
    r"model=(?P<model>[^,]+?), total_tokens=(?P<total>\d+)$")
FORWARD_ERR_RE = re.compile(
    r"^Forwarding error event to Splunk HEC at (?P<url>\S+): error_type=(?P<error_type>[^,\s]+), "
    r"subkey=(?P<subkey>[^,\s]+), model=(?P<model>[^,]+?)$")
SENDING_A_RE = re.compile(r"^Sending usage event to Splunk HEC: (?P<json>\{.*\})$")

# Pieces of outcome lines
SUBKEY_RE = re.compile(r"subkey=(?P<v>[^,\s]+?)(?=,|\.\s|\.$|\s|$)")
MODEL_RE = re.compile(r"model=(?P<v>[^,\s]+?)(?=,|\.\s|\.$|$)")
ERRTYPE_RE = re.compile(r"error_type=(?P<v>[^,\s]+?)(?=,|\.\s|\.$|$)")
TOKENS_RE = re.compile(r"(?:^|[ ,])tokens=(?P<v>\d+)\b")  # D4/D6 repeat the total: tells apart same-key sends
STATUS_RE = re.compile(r"(?:status code |status |non-200 status: |Status )(?P<v>\d{3})\b")
PAYLOAD_RE = re.compile(r"Request payload: (?P<json>\{.*\})$")
RESPONSE_RE = re.compile(r"Response(?: body)?: (?P<v>.*?)(?:\. Request payload: |$)")
SOURCE_RE = re.compile(r"^(?P<ip>[^\s(]+)(?: \(X-Forwarded-For: (?P<xff>.*)\))?$")

MAX_ZONE_OFFSET = 14 * 3600.0  # UTC-12 .. UTC+14
CLOCK_TOLERANCE = 300.0  # seconds between the service's logged time and its asctime that still agree
EXPIRE_SECONDS = 60.0  # the service's HEC timeout is 5 s: an attempt open this long has ended


@dataclass(slots=True)
class UsageRecord:
    kind: str
    era: str
    outcome: str
    detail: str
    event: dict
    time: Optional[float]
    time_source: str
    full_json: bool
    host: Optional[str]
    worker_pid: Optional[int]
    anchor: str
    line_no: int
    source: str


@dataclass
class ExtractStats:
    service_lines: int = 0
    hec_lines: int = 0
    ignored: dict = field(default_factory=dict)  # reason -> count
    streams_without_usage: int = 0   # U4: the service exported nothing for these
    streams_recorded: int = 0        # U3
    outcomes_without_attempt: int = 0
    journal_date_mismatch: int = 0   # journal date a day or more from the service's own: --year/--date wrong
    clock_mismatch: int = 0          # events whose logged time and asctime-derived time disagree
    clock_skew: float = 0.0          # seconds: logged time minus asctime-derived time (whole 15 min)
    clock_corrected: int = 0         # asctime-derived times corrected by that skew
    clock_unchecked: int = 0         # released before any event could check the clock

    def ignore(self, reason: str, n: int = 1) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + n


@dataclass
class _Attempt:
    kind: str
    era: str
    anchor: str
    t_anchor: Optional[float]
    host: Optional[str]
    worker: Optional[int]
    line_no: int
    source: str
    journal_time: Optional[float]
    subkey: Optional[str] = None      # hashed, for matching
    model: Optional[str] = None
    error_type: Optional[str] = None
    summary: dict = field(default_factory=dict)
    envelope: Optional[dict] = None
    event_only: Optional[dict] = None
    outcome: str = "unknown"
    detail: str = ""


@dataclass
class _Block:
    kind: str
    era: str
    asctime: str
    t: Optional[float]
    host: Optional[str]
    worker: Optional[int]
    line_no: int
    source: str
    journal_time: Optional[float]
    lines: list = field(default_factory=list)
    depth: int = 1


_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"')


def _depth_delta(line: str) -> int:
    if "{" not in line and "[" not in line and "}" not in line and "]" not in line:
        return 0
    if '"' in line:
        if "\\" not in line and not line.count('"') % 2:  # plain "..." pairs: what _STRING_RE removes
            line = "".join(line.split('"')[::2])
        else:
            line = _STRING_RE.sub("", line)
    return line.count("{") + line.count("[") - line.count("}") - line.count("]")


KEEP_MARKERS = (b"splunk_hec", b"[STREAMING]")
# The same markers in -o json lines whose MESSAGE journald stored as a byte array (the coloured
# stderr lines): "[27,91,51,50,...,115,112,108,117,110,107,95,104,101,99,...]".
KEEP_MARKERS_ARRAY = tuple(",".join(str(b) for b in m).encode() for m in KEEP_MARKERS)
_SPLUNK_HEC, _STREAMING = KEEP_MARKERS
_SPLUNK_HEC_A, _STREAMING_A = KEEP_MARKERS_ARRAY


class UsageExtractor:
    """Stateful: feed entries in journal order, collect records; see module docstring."""

    def __init__(self, zone: tzinfo, stats: Optional[ExtractStats] = None):
        self.zone = zone
        self.stats = stats or ExtractStats()
        self._open: dict = {}      # (host, worker) -> deque[_Attempt]
        self._blocks: dict = {}    # journal stream -> _Block
        self._out: deque = deque()
        self.skew: Optional[float] = None  # None: not yet checked; seconds to add to asctime-derived times
        self._asc_cache: dict = {}  # asctime "YYYY-MM-DD HH:MM:SS" -> epoch seconds read as UTC

    # -- the cheap prefilter the journal reader calls on raw bytes -------------------------------
    # The reader's block scan (JournalReader.read): while no payload block is open, keep() is false
    # for every line that contains none of keep_needles and starts with none of keep_line_starts.
    keep_needles = KEEP_MARKERS + KEEP_MARKERS_ARRAY + (b"blob data]",)
    keep_line_starts = b"-["

    def keep_holding(self) -> bool:
        """A multi-line payload block is open: every line may belong to it."""
        return bool(self._blocks)

    def keep_continue(self, stream: tuple, msgs: list) -> int:
        """The reader's shortcut: ``msgs`` are the next lines of ``stream``. Takes them, in order, as
        the next lines of that stream's open payload block, exactly as feed() would, and stops after
        the line that closes the block or before a line that is not part of it. Returns how many
        it took; the reader parses and feeds the rest as usual."""
        block = self._blocks.get(stream)
        if block is None:
            return 0
        lines = block.lines
        taken = 0
        for msg in msgs:
            if "A" <= msg[:1] <= "Z" and LEVEL_PREFIX_RE.match(msg):
                break
            taken += 1
            if "{" in msg or "[" in msg or "}" in msg or "]" in msg:
                block.depth += _depth_delta(msg)
                if block.depth <= 0:
                    lines.append(msg)
                    self._close_block(stream, block)
                    break
            lines.append(msg)
        return taken

    def keep(self, raw: bytes) -> bool:
        if self._blocks:
            return True
        if _SPLUNK_HEC in raw or _STREAMING in raw:
            return True
        c = raw[:1]
        if c == b"{":  # -o json: only entries whose MESSAGE (text or byte array) carries a marker
            return _SPLUNK_HEC_A in raw or _STREAMING_A in raw
        if c == b"-" or c == b"[":  # journalctl markers (-- Logs begin at ... gives the year)
            return True
        return raw.endswith(b"blob data]\n") or raw.endswith(b"blob data]")

    # -- time ----------------------------------------------------------------------------------
    def asctime_epoch(self, asctime: str, journal_time: Optional[float]) -> Optional[float]:
        """The service's local asctime as epoch seconds.

        The service's zone offset is read off the journal's own timestamp of the same line
        (rounded to 15 minutes); without one (``-o cat``) the asctime is taken in ``--tz``.
        """
        if journal_time is not None:
            # the asctime read as UTC, in whole seconds, cached per second (lines come in time order)
            sec = asctime[:19]
            base = self._asc_cache.get(sec)
            if base is None:
                try:
                    base = calendar.timegm((int(asctime[0:4]), int(asctime[5:7]), int(asctime[8:10]),
                                            int(asctime[11:13]), int(asctime[14:16]), int(asctime[17:19])))
                    datetime(int(asctime[0:4]), int(asctime[5:7]), int(asctime[8:10]), int(asctime[11:13]),
                             int(asctime[14:16]), int(asctime[17:19]))  # the same range checks as below
                except ValueError:
                    return None
                if len(self._asc_cache) >= 256:
                    self._asc_cache.clear()
                self._asc_cache[sec] = base
            try:
                ms = int(asctime[20:23])
            except ValueError:
                return None
            # what datetime(..., ms * 1000, tzinfo=utc).timestamp() computes, to the last bit
            a = (base * 1_000_000 + ms * 1000) / 1_000_000
            off = round((a - journal_time) / 900.0) * 900.0
            if -MAX_ZONE_OFFSET <= off <= MAX_ZONE_OFFSET:
                return round(a - off, 3)
            # no zone is that far off: the journal's date is not the service's (a wrong --year or
            # --date); the service's own date is right, so read its asctime in --tz instead
            self.stats.journal_date_mismatch += 1
        try:
            naive = datetime(int(asctime[0:4]), int(asctime[5:7]), int(asctime[8:10]), int(asctime[11:13]),
                             int(asctime[14:16]), int(asctime[17:19]), int(asctime[20:23]) * 1000)
        except ValueError:
            return None
        return round(naive.replace(tzinfo=self.zone).timestamp(), 3)

    # -- feeding -------------------------------------------------------------------------------
    def feed(self, e: JournalEntry) -> None:
        msg = e.message
        if self._blocks:
            stream = (e.host, e.ident, e.pid)
            block = self._blocks.get(stream)
            if block is not None and not ("A" <= msg[:1] <= "Z" and LEVEL_PREFIX_RE.match(msg)):
                self._continue_block(stream, block, msg)
                return
        m = SERVICE_RE.match(msg)
        if m is None:
            return
        self.stats.service_lines += 1
        logger = m.group("logger")
        text = m.group("text")
        worker = int(m.group("wpid"))
        key = (e.host, worker)
        if logger.endswith("splunk_hec"):
            self.stats.hec_lines += 1
            self._hec_line(e, m.group("asctime"), worker, key, text)
        elif "[STREAMING]" in text:
            if "No usage data collected" in text:
                self.stats.streams_without_usage += 1
            elif "Recording usage" in text:
                self.stats.streams_recorded += 1
        self._expire(key, m.group("asctime"), e.time)

    def _hec_line(self, e: JournalEntry, asctime: str, worker: int, key, text: str) -> None:
        tag_err = False
        era_cd = False
        if text.startswith("[HEC EXPORT] "):
            text = text[13:]
            era_cd = True
        elif text.startswith("[HEC ERROR EXPORT] "):
            text = text[19:]
            era_cd = tag_err = True
        if text.endswith("{") and "payload: {" in text:
            kind = "error" if (tag_err or "error payload" in text) else "usage"
            era = "C" if era_cd else "B"
            self._blocks[e.stream] = _Block(kind, era, asctime, self.asctime_epoch(asctime, e.time), e.host,
                                            worker, e.line_no, e.source, e.time, ["{"], 1)
            return
        if era_cd:
            if text.startswith("Starting Splunk HEC"):
                rx = START_ERR_RE if tag_err else START_RE
                m = rx.search(text)
                if m is None:
                    self.stats.ignore("HEC lines in an unrecognised shape")
                    return
                d = m.groupdict()
                era = "D" if d.get("source") is not None else "C"
                self._open_attempt(e, asctime, worker, key, "error" if tag_err else "usage", era, d)
                return
            if text.startswith("Sending POST"):
                return
            if text.startswith("✓") or text.startswith("✗"):
                self._outcome(e, key, "error" if tag_err else "usage", text, asctime)
                return
            self.stats.ignore("HEC lines in an unrecognised shape")
            return
        # eras A and B
        m = FORWARD_RE.match(text)
        if m:
            self._open_attempt(e, asctime, worker, key, "usage", "B", m.groupdict())
            return
        m = FORWARD_ERR_RE.match(text)
        if m:
            self._open_attempt(e, asctime, worker, key, "error", "B", m.groupdict())
            return
        m = SENDING_A_RE.match(text)
        if m:
            try:
                ev = json.loads(m.group("json"))
            except (ValueError, RecursionError):
                self.stats.ignore("event JSON that does not parse")
                return
            for prev in [a for a in self._open.get(key, ()) if a.era == "A"]:
                # era A sends synchronously: a new send means that one's outcome line was lost (journald's
                # rate limit); it ends without one, so the next outcome line pairs with the send it follows
                self._close(key, prev)
            a = self._open_attempt(e, asctime, worker, key, "usage", "A", {
                "subkey": ev.get("subkey"), "model": ev.get("model")})
            a.event_only = ev
            return
        if text.startswith("Splunk HEC enabled") or text.startswith("Splunk HEC disabled"):
            return
        if ("Splunk HEC" in text) or ("HTTP error sending" in text):
            kind = "error" if ("error event" in text or "error_type=" in text) else "usage"
            self._outcome(e, key, kind, text, asctime)
            return
        self.stats.ignore("HEC lines in an unrecognised shape")

    def _open_attempt(self, e, asctime, worker, key, kind, era, d) -> _Attempt:
        sub = d.get("subkey")
        a = _Attempt(kind=kind, era=era, anchor=asctime, t_anchor=self.asctime_epoch(asctime, e.time),
                     host=e.host, worker=worker, line_no=e.line_no, source=e.source, journal_time=e.time,
                     subkey=hash_subkey(sub) if sub else None, model=d.get("model"),
                     error_type=d.get("error_type"), summary=d)
        self._open.setdefault(key, deque()).append(a)
        return a

    def _find(self, key, kind, subkey, model, error_type, want_no_envelope=False, newest=False, total=None):
        q = self._open.get(key)
        if not q:
            return None
        items = reversed(q) if newest else q
        for a in items:
            if a.kind != kind:
                continue
            if want_no_envelope and a.envelope is not None:
                continue
            if subkey is not None and a.subkey is not None and a.subkey != subkey:
                continue
            if model is not None and a.model is not None and a.model != model:
                continue
            if error_type is not None and a.error_type is not None and a.error_type != error_type:
                continue
            if total is not None and a.summary.get("total") is not None and int(a.summary["total"]) != total:
                continue
            return a
        return None

    def _outcome(self, e, key, kind, text, asctime) -> None:
        if "SUCCESS" in text or "sent successfully" in text:
            outcome = "delivered"
        elif "TIMEOUT" in text or "timed out" in text or "UNEXPECTED ERROR" in text:
            outcome = "uncertain"
        else:
            outcome = "failed"
        m = SUBKEY_RE.search(text)
        subkey = hash_subkey(m.group("v")) if m else None
        m = MODEL_RE.search(text)
        model = m.group("v") if m else None
        m = ERRTYPE_RE.search(text)
        error_type = m.group("v") if m else None
        m = TOKENS_RE.search(text)
        a = self._find(key, kind, subkey, model, error_type, total=int(m.group("v")) if m else None)
        payload = None
        pm = PAYLOAD_RE.search(text)
        if pm:
            try:
                payload = json.loads(pm.group("json"))
            except (ValueError, RecursionError):
                payload = None
        if a is None:
            if payload is None:
                self.stats.outcomes_without_attempt += 1
                self.stats.ignore("outcome lines whose event is not in the input (extract began mid-event,"
                                  " or an error event era A never logged)")
                return
            ev = payload.get("event") or {}
            a = _Attempt(kind=kind, era="D" if "source=" in text or "client_ip" in ev else "C",
                         anchor=asctime, t_anchor=self.asctime_epoch(asctime, e.time), host=e.host, worker=key[1],
                         line_no=e.line_no, source=e.source, journal_time=e.time,
                         subkey=hash_subkey(ev["subkey"]) if ev.get("subkey") else subkey, model=ev.get("model"))
            self._open.setdefault(key, deque()).append(a)
        if payload is not None and a.envelope is None:
            a.envelope = payload
        a.outcome = outcome
        a.detail = _detail(outcome, text)
        self._close(key, a)

    def _continue_block(self, stream, block: _Block, msg: str) -> None:
        block.lines.append(msg)
        block.depth += _depth_delta(msg)
        if block.depth > 0:
            return
        self._close_block(stream, block)

    def _close_block(self, stream, block: _Block) -> None:
        del self._blocks[stream]
        try:
            env = json.loads("\n".join(block.lines))
        except (ValueError, RecursionError):
            self.stats.ignore("payload blocks that do not parse as JSON")
            return
        if not isinstance(env, dict) or not isinstance(env.get("event"), dict):
            self.stats.ignore("payload blocks without an event")
            return
        ev = env["event"]
        sub = ev.get("subkey")
        subkey = hash_subkey(sub) if isinstance(sub, str) else None
        key = (block.host, block.worker)
        a = self._find(key, block.kind, subkey, ev.get("model"), ev.get("error_type"),
                       want_no_envelope=True, newest=True)
        if a is None:
            a = _Attempt(kind=block.kind, era=block.era, anchor=block.asctime, t_anchor=block.t,
                         host=block.host, worker=block.worker, line_no=block.line_no, source=block.source,
                         journal_time=block.journal_time, subkey=subkey, model=ev.get("model"),
                         error_type=ev.get("error_type"))
            self._open.setdefault(key, deque()).append(a)
        a.envelope = env
        if a.era == "C" and ("client_ip" in ev or "x_forwarded_for" in ev):
            a.era = "D"

    def _close(self, key, a: _Attempt) -> None:
        q = self._open.get(key)
        if q is not None:
            try:
                q.remove(a)
            except ValueError:
                pass
            if not q:
                del self._open[key]
        self._out.append(self._record(a))

    def _expire(self, key, asctime: str, journal_time) -> None:
        q = self._open.get(key)
        if not q or q[0].anchor[:16] == asctime[:16]:  # nothing open, or the oldest began this minute
            return
        now = self.asctime_epoch(asctime, journal_time)
        while q and q[0].t_anchor is not None and now is not None and now - q[0].t_anchor > EXPIRE_SECONDS:
            self._close(key, q[0])
            if key not in self._open:
                break

    def drain(self) -> Iterator[UsageRecord]:
        while self._out:
            yield self._out.popleft()

    def finish(self) -> Iterator[UsageRecord]:
        """End of input: attempts with no outcome logged become records with outcome unknown."""
        for stream in list(self._blocks):
            self.stats.ignore("payload blocks cut off at the end of the input")
            del self._blocks[stream]
        for key in list(self._open):
            for a in list(self._open.get(key, ())):
                self._close(key, a)
        yield from self.drain()

    # -- building the record --------------------------------------------------------------------
    def _record(self, a: _Attempt) -> UsageRecord:
        full = True
        if a.envelope is not None:
            ev = dict(a.envelope.get("event") or {})
            t = a.envelope.get("time")
            t = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None
            ts = "payload"
            if t is None:
                t, ts = _iso_epoch(ev.get("timestamp")), "timestamp"
        elif a.event_only is not None:
            ev = dict(a.event_only)
            t, ts = _iso_epoch(ev.get("timestamp")), "timestamp"
        else:
            full = False
            ev = _rebuild(a)
            t, ts = a.t_anchor, "asctime"
        if t is None:
            t, ts = (a.t_anchor, "asctime") if a.t_anchor is not None else (a.journal_time, "journal")
        elif ts != "asctime" and a.t_anchor is not None:
            self._check_clock(t - a.t_anchor)
        if not full and "timestamp" not in ev and t is not None:
            ev["timestamp"] = datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds")
        return UsageRecord(kind=a.kind, era=a.era, outcome=a.outcome, detail=a.detail or
                           ("the service logged no outcome" if a.outcome == "unknown" else ""),
                           event=ev, time=t, time_source=ts, full_json=full, host=a.host,
                           worker_pid=a.worker, anchor=a.anchor, line_no=a.line_no, source=a.source)


    def _check_clock(self, diff: float) -> None:
        """An event with its own logged time checks how its asctime was read (the zone of the text)."""
        if abs(diff) <= CLOCK_TOLERANCE:
            if self.skew is None:
                self.skew = 0.0
            return
        skew = round(diff / 900.0) * 900.0
        if abs(skew) > 2 * MAX_ZONE_OFFSET:
            return
        self.stats.clock_mismatch += 1
        self.stats.clock_skew = skew
        if not self.skew:
            self.skew = skew

    def corrected(self, r: UsageRecord) -> UsageRecord:
        """A record whose time came from the asctime, moved by the skew the service's clock showed."""
        if self.skew and r.time_source == "asctime" and r.time is not None:
            r.time = round(r.time + self.skew, 3)
            if not r.full_json:
                r.event["timestamp"] = datetime.fromtimestamp(r.time, timezone.utc).isoformat(timespec="microseconds")
            self.stats.clock_corrected += 1
        return r


def _rebuild(a: _Attempt) -> dict:
    """The event as the service sent it, from the summary line (INFO level logs no JSON)."""
    d = a.summary
    ev: dict = {}
    if a.kind == "error":
        ev["event_type"] = "error"
        ev["error_type"] = d.get("error_type")
        ev["subkey"] = d.get("subkey")
        ev["model"] = d.get("model")
    else:
        ev["subkey"] = d.get("subkey")
        ev["model"] = d.get("model")
        ev["requests"] = 1
        if d.get("prompt") is not None:
            ev["prompt_tokens"] = int(d["prompt"])
            ev["completion_tokens"] = int(d["completion"])
        ev["total_tokens"] = int(d["total"]) if d.get("total") is not None else None
    if a.t_anchor is not None:
        ev["timestamp"] = datetime.fromtimestamp(a.t_anchor, timezone.utc).isoformat(timespec="microseconds")
    src = d.get("source")
    if src:
        m = SOURCE_RE.match(src)
        if m:
            ev["client_ip"] = m.group("ip")
            ev["x_forwarded_for"] = m.group("xff") or ""
    return ev


def _detail(outcome: str, text: str) -> str:
    if outcome == "delivered":
        return "HEC accepted it"
    m = STATUS_RE.search(text)
    r = RESPONSE_RE.search(text)
    body = r.group("v") if r else ""
    if m:
        return f"http {m.group('v')} {body}".strip()
    if outcome == "uncertain":
        return "timeout (HEC may have received it)" if ("TIMEOUT" in text or "timed out" in text) \
            else "unexpected error (HEC may have received it)"
    low = text.lower()
    if "refused" in low or "connect" in low:
        return "connection failed"
    return text[:120]


def _iso_epoch(ts) -> Optional[float]:
    """The event's ISO ``timestamp`` as epoch seconds, or None when it has none that reads."""
    if not isinstance(ts, str):
        return None
    try:
        return iso_to_epoch(ts)
    except ValueError:
        return None


HOLD_UNCHECKED = 2000  # records held back until an event shows how the journal's zone relates to the service's


def extract(entries: Iterable[JournalEntry], extractor: UsageExtractor) -> Iterator[UsageRecord]:
    """Generator: records as soon as each event's outcome is known, the rest at the end.

    Until one event with its own logged time has checked the zone the text was read in, up to
    HOLD_UNCHECKED records wait, so that a wrong --tz is corrected for them too.
    """
    feed = extractor.feed
    out = extractor._out
    held: deque = deque()
    fix = extractor.corrected
    for e in entries:
        feed(e)
        if out:
            if extractor.skew is None and len(held) < HOLD_UNCHECKED:
                held.extend(extractor.drain())
                continue
            while held:
                r = held.popleft()
                if extractor.skew is None:
                    extractor.stats.clock_unchecked += 1
                yield fix(r)
            for r in extractor.drain():
                yield fix(r)
    rest = list(extractor.finish())
    if extractor.skew is None:
        extractor.stats.clock_unchecked += len(held) + len(rest)
    for r in held:
        yield fix(r)
    for r in rest:
        yield fix(r)
