"""journalctl text -> JournalEntry, whatever ``-o`` view the operator extracted.

Every ``journalctl`` text view is recognised line by line (an input may be several files
concatenated): ``short``, ``short-precise``, ``short-iso``, ``short-iso-precise``, ``short-full``,
``short-unix``, ``json``, ``cat``, and the service's own lines with no journal prefix.

Output schema (one ``JournalEntry`` per kept line)::

    time        float | None   epoch seconds of the journal prefix (None: cat / bare lines)
    precise     bool           the prefix had sub-second precision
    host        str | None     journal host name
    ident       str | None     syslog identifier (e.g. "oai-to-circuit")
    pid         int | None     journal _PID (uvicorn's reloader, not the worker)
    message     str            the message, ANSI colour codes removed
    line_no     int            1-based line number within its input
    stream      tuple          (host, ident, pid): lines of one journald stream

Lines are only decoded and parsed when the caller's ``keep(raw_bytes)`` says so (the usage extractor keeps the
few lines that can matter); every other line is counted, never parsed. Skipped lines are counted
by reason in ``ReadStats``.
"""
from __future__ import annotations

import gzip
import zlib
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable, Iterable, Iterator, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError, InputError

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
BLOB_RE = re.compile(r"\[\d+(?:\.\d+)?[KMG]?B blob data\]$")
MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

_TAIL = r" (?P<host>\S+) (?P<ident>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?:(?: (?P<msg>.*))?$"
SHORT_RE = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2}) (?P<day>[ \d]\d) (?P<hms>\d\d:\d\d:\d\d)(?P<frac>\.\d{1,9})?" + _TAIL)
ISO_RE = re.compile(
    r"^(?P<ymd>\d{4}-\d\d-\d\d)T(?P<hms>\d\d:\d\d:\d\d)(?P<frac>\.\d{1,9})?"
    r"(?P<off>Z|[+-]\d\d:?\d\d)" + _TAIL)
FULL_RE = re.compile(
    r"^[A-Z][a-z]{2} (?P<ymd>\d{4}-\d\d-\d\d) (?P<hms>\d\d:\d\d:\d\d)(?P<frac>\.\d{1,9})? (?P<zone>[A-Za-z0-9+-]+)" + _TAIL)
UNIX_RE = re.compile(r"^(?P<epoch>\d{9,11}(?:\.\d{1,9})?)" + _TAIL)
MARKER_RE = re.compile(r"^-- (?:Boot [0-9a-f]+|Reboot|No entries|(?:Logs|Journal) begins? at .*) --$")
# Common zone abbreviations journalctl -o short-full prints (unambiguous ones only).
ABBREV_OFFSETS = {"EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
                  "AKST": -9, "AKDT": -8, "HST": -10, "CET": 1, "CEST": 2, "EET": 2, "EEST": 3, "WET": 0,
                  "WEST": 1, "BST": 1, "JST": 9, "KST": 9, "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13}
LOGS_BEGIN_RE = re.compile(r"(?:Logs|Journal) begins? at \w{3} (\d{4})-\d\d-\d\d")


@dataclass(slots=True)
class JournalEntry:
    time: Optional[float]
    precise: bool
    host: Optional[str]
    ident: Optional[str]
    pid: Optional[int]
    message: str
    line_no: int
    source: str = "-"

    @property
    def stream(self) -> tuple:
        return (self.host, self.ident, self.pid)


@dataclass
class ReadStats:
    inputs: int = 0
    lines: int = 0
    bytes: int = 0
    parsed: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> count
    formats: dict = field(default_factory=dict)  # view -> parsed lines
    blob_lines: int = 0
    no_entries: int = 0  # '-- No entries --': journalctl found nothing in the range asked for

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def local_zone() -> tzinfo:
    """The zone journalctl itself would print in: $TZ, else the system's /etc/localtime."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh)
    except (OSError, ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def parse_zone(name: Optional[str], utc: bool = False) -> tzinfo:
    if utc:
        return timezone.utc
    if not name:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--tz {name}: unknown time zone (use an IANA name such as Europe/Berlin or UTC)")


def open_inputs(paths: Iterable[str], stdin=None) -> Iterator[tuple[str, Iterable[bytes]]]:
    """Yield (name, binary line iterator) per input; '-' is stdin; .gz is read transparently."""
    for p in paths:
        if p == "-":
            raw = (stdin or sys.stdin).buffer if hasattr(stdin or sys.stdin, "buffer") else (stdin or sys.stdin)
            yield "<stdin>", _maybe_gzip(raw)
            continue
        try:
            fh = open(p, "rb")
        except FileNotFoundError:
            raise InputError(f"{p}: no such file")
        except IsADirectoryError:
            raise InputError(f"{p}: is a directory, not a journal extract")
        except PermissionError:
            raise InputError(f"{p}: permission denied")
        with fh:
            yield p, _maybe_gzip(fh)


def _maybe_gzip(fh) -> Iterable[bytes]:
    """Sniff the gzip magic so `.gz` works from a file or from stdin alike."""
    buffered = fh if hasattr(fh, "peek") else io.BufferedReader(fh)
    head = buffered.peek(2)[:2]
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered)
    return buffered


class JournalReader:
    """Turn text lines of any journalctl view into JournalEntry records.

    Short views have no year: it comes from ``year`` (``--date``/``--year``), else a
    ``-- Logs begin at`` header, else the service's own asctime (which has one), else today;
    a month that goes backwards (December -> January) moves to the next year.
    """

    def __init__(self, zone: tzinfo, year: Optional[int] = None, stats: Optional[ReadStats] = None,
                 keep: Optional[Callable[[bytes], bool]] = None):
        self.zone = zone
        self.explicit_year = year
        self.year = year
        self.stats = stats or ReadStats()
        self.keep = keep
        self._last_month = None
        self._year_source = "flag" if year else None
        # The prefix ("Dec 03 18:23:58 host ident[pid]: ") of the last short/iso line parsed, and what
        # it parsed to: lines of one stream within one second share it, and are not parsed again.
        self._pfx: Optional[str] = None
        self._pfx_year: Optional[int] = None
        self._pfx_entry: tuple = ()
        # keep's owner may say which bytes every line it keeps contains (see read())
        owner = getattr(keep, "__self__", None)
        self._needles = tuple(getattr(owner, "keep_needles", None) or ()) or None
        self._line_starts = bytes(getattr(owner, "keep_line_starts", b"") or b"")
        self._holding = getattr(owner, "keep_holding", None)
        self._continue = getattr(owner, "keep_continue", None)
        self._pfx_b: Optional[bytes] = None  # self._pfx as bytes, when it is ASCII
        if self._needles is not None and self._holding is None:
            self._needles = None

    # -- year bookkeeping for yearless short views -------------------------------------------
    def _year_for(self, month: int, msg: Optional[str]) -> int:
        if self._year_source != "flag" and self._year_source != "asctime" and msg:
            # until a service line has shown its own full date, the year is a guess (header, today)
            m = _ASCTIME_YEAR_RE.search(msg)
            if m:
                y = int(m.group(1))
                if int(m.group(2)) == 1 and month == 12:
                    y -= 1  # the service logged just past New Year's; the journal prefix is before it
                elif int(m.group(2)) == 12 and month == 1:
                    y += 1
                self.year, self._year_source = y, "asctime"
        if self.year is None:
            self.year = datetime.now(self.zone).year
            self._year_source = "today"
        elif self._last_month is not None and month < self._last_month and self._last_month - month > 6:
            self.year += 1  # December -> January inside one input
        self._last_month = month
        return self.year

    def _local_epoch(self, y: int, mo: int, d: int, hms: str, frac: Optional[str], zone: tzinfo) -> float:
        h, mi, s = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
        dt = datetime(y, mo, d, h, mi, s, tzinfo=zone)
        t = dt.timestamp()
        if frac:
            t += float(frac)
        return t

    # -- one line -------------------------------------------------------------------------------
    def parse_line(self, text: str, line_no: int, source: str) -> Optional[JournalEntry]:
        """Return the entry for one decoded line, or None when it is a marker / not an entry."""
        pfx = self._pfx
        if pfx is not None and text.startswith(pfx) and self.year == self._pfx_year:
            # same journal prefix as the line before: same time, host, ident, pid (and same month)
            t, precise, host, ident, pid, view = self._pfx_entry
            formats = self.stats.formats
            formats[view] = formats.get(view, 0) + 1
            msg = text[len(pfx):]
            if "\x1b" in msg:
                msg = ANSI_RE.sub("", msg)
            return JournalEntry(t, precise, host, ident, pid, msg, line_no, source)
        c = text[:1]
        if c == "{":
            e = self._parse_json(text, line_no, source)
            if e is not None:
                return e
        elif c == "-" and text.startswith("-- "):
            if MARKER_RE.match(text):
                m = LOGS_BEGIN_RE.search(text)
                if m and self.explicit_year is None:
                    self.year = int(m.group(1))
                    self._year_source = "header"
                if text == "-- No entries --":
                    self.stats.no_entries += 1
                self.stats.skip("journalctl marker lines (-- Boot --, -- Logs begin --, ...)")
                return None
        m = None
        if c.isdigit():
            m = ISO_RE.match(text)
            if m:
                return self._entry_iso(m, line_no, source)
            m = UNIX_RE.match(text)
            if m:
                return self._entry(float(m.group("epoch")), "." in m.group("epoch"), m, line_no, source, "short-unix")
        elif c.isalpha():
            m = SHORT_RE.match(text)
            if m:
                mon = MONTHS.get(m.group("mon"))
                if mon:
                    msg = m.group("msg")
                    y = self._year_for(mon, msg)
                    try:
                        t = self._local_epoch(y, mon, int(m.group("day")), m.group("hms"), m.group("frac"), self.zone)
                    except ValueError:
                        t = None
                    view = "short-precise" if m.group("frac") else "short"
                    return self._entry(t, bool(m.group("frac")), m, line_no, source, view)
            m = FULL_RE.match(text)
            if m:
                y, mo, d = (int(x) for x in m.group("ymd").split("-"))
                zone = self._zone_from_abbrev(m.group("zone"), y, mo, d, m.group("hms"))
                t = self._local_epoch(y, mo, d, m.group("hms"), m.group("frac"), zone)
                return self._entry(t, bool(m.group("frac")), m, line_no, source, "short-full")
        # cat view, or the service's own lines without a journal prefix
        self.stats.formats["cat"] = self.stats.formats.get("cat", 0) + 1
        return JournalEntry(None, False, None, None, None, _clean(text), line_no, source)

    def _zone_from_abbrev(self, abbrev: str, y: int, mo: int, d: int, hms: str) -> tzinfo:
        """short-full prints a zone abbreviation: trust --tz when it agrees, else a known offset."""
        if abbrev in ("UTC", "GMT", "Z"):
            return timezone.utc
        try:
            if datetime(y, mo, d, int(hms[:2]), tzinfo=self.zone).tzname() == abbrev:
                return self.zone
        except ValueError:
            return self.zone
        if abbrev in ABBREV_OFFSETS:
            return timezone(timedelta(hours=ABBREV_OFFSETS[abbrev]))
        m = re.fullmatch(r"([+-])(\d\d)(\d\d)?", abbrev)
        if m:
            mins = int(m.group(2)) * 60 + int(m.group(3) or 0)
            return timezone(timedelta(minutes=mins if m.group(1) == "+" else -mins))
        return self.zone

    def _entry_iso(self, m, line_no, source) -> JournalEntry:
        off = m.group("off")
        if off == "Z":
            off = "+00:00"
        elif ":" not in off:
            off = off[:3] + ":" + off[3:]
        frac = m.group("frac") or ""
        try:
            dt = datetime.fromisoformat(f"{m.group('ymd')}T{m.group('hms')}{off}")
            t = dt.timestamp() + (float(frac) if frac else 0.0)
        except ValueError:
            t = None
        return self._entry(t, bool(frac), m, line_no, source, "short-iso-precise" if frac else "short-iso")

    def _entry(self, t, precise, m, line_no, source, view) -> JournalEntry:
        self.stats.formats[view] = self.stats.formats.get(view, 0) + 1
        pid = m.group("pid")
        host, ident, pid = m.group("host"), m.group("ident"), int(pid) if pid else None
        start = m.start("msg")
        if start >= 0 and view != "short-full":  # short-full: the zone may depend on --tz per line; not cached
            pfx = self._pfx = m.string[:start]
            self._pfx_b = pfx.encode("ascii") if pfx.isascii() else None
            self._pfx_year = self.year
            self._pfx_entry = (t, precise, host, ident, pid, view)
        else:
            self._pfx = self._pfx_b = None
        return JournalEntry(t, precise, host, ident, pid, _clean(m.group("msg") or ""), line_no, source)

    def _parse_json(self, text, line_no, source) -> Optional[JournalEntry]:
        try:
            d = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting in junk input
            return None
        if not isinstance(d, dict) or "MESSAGE" not in d:
            return None
        msg = d.get("MESSAGE")
        if isinstance(msg, list):  # journald stores lines with control characters as byte arrays
            try:
                msg = bytes(msg).decode("utf-8", "replace")
            except (ValueError, TypeError):
                msg = ""
        elif msg is None:
            msg = ""
        elif not isinstance(msg, str):
            msg = str(msg)
        ts = d.get("__REALTIME_TIMESTAMP")
        try:
            t = int(ts) / 1e6 if ts is not None else None
        except (TypeError, ValueError):
            t = None
        pid = d.get("_PID") or d.get("SYSLOG_PID")
        try:
            pid = int(pid) if pid is not None else None
        except (TypeError, ValueError):
            pid = None
        self.stats.formats["json"] = self.stats.formats.get("json", 0) + 1
        return JournalEntry(t, True, d.get("_HOSTNAME"), d.get("SYSLOG_IDENTIFIER"), pid,
                            _clean(msg), line_no, source)

    # -- whole inputs ---------------------------------------------------------------------------
    def read(self, name: str, lines: Iterable[bytes]) -> Iterator[JournalEntry]:
        """Entries of one input, in order.

        ``keep(raw_bytes)`` decides which lines are decoded and parsed at all. When keep is a
        method of an object that also has ``keep_needles`` (byte strings), ``keep_line_starts``
        (bytes: first characters) and ``keep_holding()``, that object promises: while
        ``keep_holding()`` is false, keep() is false for every line that contains none of the
        needles and starts with none of those characters. Inputs with a ``read`` method are then
        scanned in large blocks for those bytes, and the lines between are only counted. An
        optional ``keep_continue(stream, messages)`` takes, while holding, lines that have the
        same journal prefix as the line parsed before them (same stream, same second) without a
        JournalEntry being built for each; it returns how many it took, and the rest are parsed
        and yielded as usual.
        """
        self.stats.inputs += 1
        self._last_month = None
        self._pfx = self._pfx_b = None
        try:
            if self._needles is not None and hasattr(lines, "read"):
                yield from self._read_blocks(name, lines)
            else:
                yield from self._read_lines(name, lines)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise InputError(f"{name}: the gzip data is truncated or corrupt ({exc}); extract it again") from None

    def _read_lines(self, name: str, lines: Iterable[bytes]) -> Iterator[JournalEntry]:
        stats = self.stats
        keep = self.keep
        one = self._one
        n = 0
        for raw in lines:
            n += 1
            stats.lines += 1
            stats.bytes += len(raw)
            if keep is not None and not keep(raw):
                continue
            e = one(raw, n, name)
            if e is not None:
                yield e

    def _one(self, raw: bytes, n: int, name: str) -> Optional[JournalEntry]:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        if text.endswith("blob data]") and BLOB_RE.search(text):
            self.stats.blob_lines += 1
            self.stats.skip("[NNNB blob data] lines (re-extract with journalctl -a or -o json)")
            return None
        e = self.parse_line(text, n, name)
        if e is not None:
            self.stats.parsed += 1
        return e

    def _read_blocks(self, name: str, fh) -> Iterator[JournalEntry]:
        """read() for a file: find the lines keep() may want with bytes.find over 1 MiB blocks."""
        stats = self.stats
        keep = self.keep
        holding = self._holding
        cont = self._continue
        formats = stats.formats
        one = self._one
        needles = self._needles
        starts = self._line_starts
        starts_re = re.compile(b"\n[" + re.escape(starts) + b"]") if starts else None
        n = 0  # lines so far
        carry = b""  # the start of a line the last block cut
        while True:
            block = fh.read(BLOCK_SIZE)
            if carry and block and b"\n" not in block:  # a very long line: gather it without copying it again
                pieces = [carry, block]
                while block and b"\n" not in block:
                    block = fh.read(BLOCK_SIZE)
                    pieces.append(block)
                carry = b"".join(pieces[:-1])
            if not block:
                if carry:  # a last line without a newline
                    n += 1
                    stats.lines += 1
                    stats.bytes += len(carry)
                    if holding() or keep(carry):
                        e = one(carry, n, name)
                        if e is not None:
                            yield e
                return
            data = carry + block if carry else block
            end = data.rfind(b"\n") + 1
            if end == 0:  # no line ends in this block yet (a very long line)
                carry = data
                continue
            carry = data[end:]
            stats.bytes += end
            # next occurrence of each needle at or after pos (-1: none left in this block)
            nxt = [data.find(nd, 0, end) for nd in needles]
            nxt_start = -2  # next line start with one of `starts` (-2: not searched yet)
            pos = 0
            while pos < end:
                if holding():  # e.g. a multi-line payload block is open: every line goes to keep()
                    pb = self._pfx_b
                    if cont is not None and pb is not None and data.startswith(pb, pos) \
                            and self.year == self._pfx_year:
                        # Lines with the prefix of the line parsed before: same stream, same second;
                        # their messages are all that is new. Offer the run of them to keep_continue.
                        t, precise, host, ident, pid, view = self._pfx_entry
                        k = stop = 0
                        if pos:  # a pretty-printed payload ends with a line "}": try the whole run at once
                            k, stop = _take_run(data, pos, end, pb, (host, ident, pid), cont)
                        if not k:
                            ends: list = []
                            k = cont((host, ident, pid), _same_prefix_messages(data, pos, end, pb, ends))
                            stop = ends[k - 1] if k else 0
                        if k:
                            n += k
                            stats.lines += k
                            stats.parsed += k
                            formats[view] = formats.get(view, 0) + k
                            pos = stop
                            continue
                    line_start = pos
                else:
                    cand = end
                    for i, at in enumerate(nxt):
                        if 0 <= at < pos:
                            at = nxt[i] = data.find(needles[i], pos, end)
                        if 0 <= at < cand:
                            cand = at
                    if starts_re is not None:
                        if nxt_start == -2 or 0 <= nxt_start < pos:
                            if pos == 0 and data[:1] in starts:
                                nxt_start = 0
                            else:
                                m = starts_re.search(data, max(pos - 1, 0), end)
                                nxt_start = m.start() + 1 if m else -1
                        if 0 <= nxt_start < cand:
                            cand = nxt_start
                    if cand >= end:  # nothing in the rest of the block can be wanted
                        k = data.count(b"\n", pos, end)
                        n += k
                        stats.lines += k
                        break
                    line_start = data.rfind(b"\n", pos, cand) + 1 or pos
                    if line_start > pos:
                        k = data.count(b"\n", pos, line_start)
                        n += k
                        stats.lines += k
                nl = data.index(b"\n", line_start) + 1  # one line, wanted or held: take it
                raw = data[line_start:nl]
                n += 1
                stats.lines += 1
                pos = nl
                if keep(raw):
                    e = one(raw, n, name)
                    if e is not None:
                        yield e


BLOCK_SIZE = 1 << 20


def _take_run(data: bytes, pos: int, end: int, prefix: bytes, stream: tuple, cont) -> tuple:
    """Offer ``cont`` the lines from ``pos`` to the next line that is just "}" in one list, when
    every one of them starts with ``prefix`` and none needs the usual path (ANSI, blob, CR).
    Returns (lines taken, end offset of the last line taken) or (0, 0)."""
    close = data.find(b"\n" + prefix + b"}", pos - 1, min(end, pos + RUN_WINDOW))
    if close < 0:
        return 0, 0
    stop = data.index(b"\n", close + 1) + 1
    lines = data.count(b"\n", pos, stop)
    if data.count(b"\n" + prefix, pos - 1, stop) != lines or data.find(b"\x1b", pos, stop) >= 0 \
            or data.find(b"blob data]", pos, stop) >= 0 or data.find(b"\r", pos, stop) >= 0:
        return 0, 0
    plen = len(prefix)
    msgs = [line[plen:] for line in data[pos:stop - 1].decode("utf-8", "replace").split("\n")]
    k = cont(stream, msgs)
    if k == lines or not k:
        return k, stop
    q = pos
    for _ in range(k):
        q = data.index(b"\n", q) + 1
    return k, q


RUN_WINDOW = 1 << 16


def _same_prefix_messages(data: bytes, pos: int, end: int, prefix: bytes, ends: list) -> Iterator[str]:
    """The messages of the lines from ``pos`` on that start with ``prefix`` (ASCII), decoded as
    JournalReader._one would; stops before a line that does not, or that holds an ANSI escape or
    blob data (those take the usual path). ``ends`` gets the end offset of each line yielded."""
    plen = len(prefix)
    while pos < end and data.startswith(prefix, pos):
        q = data.index(b"\n", pos) + 1
        m = data[pos + plen:q]
        if b"\x1b" in m or b"blob data]" in m:
            return
        ends.append(q)
        yield m.decode("utf-8", "replace").rstrip("\r\n")
        pos = q
_ASCTIME_YEAR_RE = re.compile(r"\b(\d{4})-(\d\d)-\d\d \d\d:\d\d:\d\d,\d{3} - ")


def _clean(msg: str) -> str:
    if "\x1b" in msg:
        msg = ANSI_RE.sub("", msg)
    return msg


def read_entries(paths: Iterable[str], *, zone: tzinfo, year: Optional[int] = None,
                 stats: Optional[ReadStats] = None, keep: Optional[Callable[[bytes], bool]] = None,
                 stdin=None) -> Iterator[JournalEntry]:
    """All entries of all inputs, in order."""
    reader = JournalReader(zone, year=year, stats=stats, keep=keep)
    for name, lines in open_inputs(paths, stdin=stdin):
        yield from reader.read(name, lines)
