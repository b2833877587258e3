#!/usr/bin/env python3
"""Build benchmark journals (10k .. 5M lines) by replaying the project's real journal extracts.

    python bench/make_journals.py --sizes 10k,100k,1m,5m [--views short,json] [--gzip]

Sources (read at run time from the project's own copies of ../shared/examples/):
  tests/fixtures/service-9c7664e/   era A, DEBUG (one run)
  tests/fixtures/service-e749b02/   era D, INFO run + DEBUG run, one reboot marker
  -o short: journal.short.txt.gz as extracted;  -o json: service.journal.gz printed by the real
  ``journalctl --file X -o json -u oai-to-circuit.service`` (cached under bench/out/src/).

One replay = the 9c7664e extract followed by the e749b02 one (27,684 short lines, ~505 usage and
error events: the mix of eras, levels, noise and failures of the examples). Replay k is shifted by
k days (e749b02 a further 10 minutes, so time only moves forward within a day), which is what a
busy host writes: tens of thousands of lines a day. Shifted: the journal's own timestamps
(short prefix, __REALTIME_TIMESTAMP), the service's asctime, the payload ``time`` and ISO
``timestamp`` fields, and the journal and worker pids (+10 per replay). So every event of every
replay has its own backfill_id and nothing is skipped as a repeat. The last replay is cut at
the size asked for (mid-event, as a real extract would be).

MESSAGE fields that journald stored as byte arrays (the coloured stderr lines) stay byte arrays:
the asctime and pid inside them are shifted in that encoding.

Files: bench/out/<view>-<size>.txt (+ .txt.gz with --gzip), reused when already built by the
same generator version (bench/out/<name>.meta.json).
"""
from __future__ import annotations

import argparse
import calendar
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = Path(__file__).resolve().parent / "out"
SOURCES = ("service-9c7664e", "service-e749b02")
SOURCE_OFFSET = {"service-9c7664e": 0, "service-e749b02": 600}  # seconds, within one replay day
DAY = 86400
PID_STEP = 10
VERSION = 3
BASE_YEAR = 2026  # the examples were recorded on 3 December 2026 (short views print no year)

SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000, "5m": 5_000_000}
VIEWS = ("short", "json")

# -- slot finders ----------------------------------------------------------------------------
# Each finds (start, end, slot) in a text: the span is replaced per replay by the slot rendered.
SHORT_PREFIX_RE = re.compile(r"^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) \S+ (?:(oai-to-circuit)\[(\d+)\])?")
ASC_RE = re.compile(r"(?<!\d)(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?=,\d{3})")
ISO_RE = re.compile(r"(?<![\d-])(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?=[.+Z\-\"\\])")
EPOCH_RE = re.compile(r"time\\?\"\s*:\s*(1\d{9})(?=[.,}\s])")
WPID_RE = re.compile(r"Process-\d+\[(\s*\d+)\]")
JSON_US_RE = re.compile(r"\"(?:__REALTIME_TIMESTAMP|_SOURCE_REALTIME_TIMESTAMP)\":\"(\d+)\"")
JSON_PID_RE = re.compile(r"\"_PID\":\"(\d+)\"")
MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                      "Nov", "Dec"), 1)}


def _ymdhms(text: str) -> int:
    return calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
                            int(text[17:19]), 0, 0, 0))


def message_slots(text: str) -> list:
    """Slots inside a service message (or a whole short line): asctime, ISO time, payload time, worker pid."""
    out = []
    for m in ASC_RE.finditer(text):
        out.append((m.start(1), m.end(1), ("asc", _ymdhms(m.group(1)), 0)))
    for m in ISO_RE.finditer(text):
        out.append((m.start(1), m.end(1), ("iso", _ymdhms(m.group(1)), 0)))
    for m in EPOCH_RE.finditer(text):
        out.append((m.start(1), m.end(1), ("epoch", int(m.group(1)), 0)))
    for m in WPID_RE.finditer(text):
        out.append((m.start(1), m.end(1), ("pid", int(m.group(1)), len(m.group(1)))))
    return out


def short_slots(line: str) -> list:
    out = []
    m = SHORT_PREFIX_RE.match(line)
    if m:
        mon, day, hms = m.group(1)[:3], int(m.group(1)[4:6]), m.group(1)[7:]
        base = calendar.timegm((BASE_YEAR, MONTHS[mon], day, int(hms[:2]), int(hms[3:5]), int(hms[6:8]), 0, 0, 0))
        out.append((m.start(1), m.end(1), ("short", base, 0)))
        if m.group(3):
            out.append((m.start(3), m.end(3), ("pid", int(m.group(3)), 0)))
    return out + message_slots(line)


def render(slot, delta: int, pid_shift: int) -> str:
    kind, base, width = slot
    if kind == "short":
        return time.strftime("%b %d %H:%M:%S", time.gmtime(base + delta))
    if kind == "asc":
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base + delta))
    if kind == "iso":
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + delta))
    if kind == "epoch":
        return str(base + delta)
    if kind == "us":
        return str(base + delta * 1_000_000)
    if kind == "pid":
        if base <= 1:
            return str(base).rjust(width)
        return str(1000 + (base - 1000 + pid_shift) % 98_000).rjust(width)
    raise ValueError(kind)


class Template:
    """One source file as literal byte chunks and slot indexes; render(k) gives replay k."""

    def __init__(self):
        self.parts: list = []       # bytes | int (index into self.slots)
        self.slots: list = []       # (slot, enc) ; enc "t" text, "a" journald byte array
        self._index: dict = {}
        self.lines = 0
        self._lit: list = []

    def lit(self, b: bytes) -> None:
        if b:
            self._lit.append(b)

    def slot(self, slot, enc: str) -> None:
        if self._lit:
            self.parts.append(b"".join(self._lit))
            self._lit = []
        key = (slot, enc)
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self.slots)
            self.slots.append(key)
        self.parts.append(i)

    def end_line(self) -> None:
        self.lines += 1

    def close(self) -> None:
        if self._lit:
            self.parts.append(b"".join(self._lit))
            self._lit = []

    def render(self, delta: int, pid_shift: int) -> bytes:
        vals = []
        for slot, enc in self.slots:
            v = render(slot, delta, pid_shift).encode()
            if enc == "a":
                v = ",".join(str(b) for b in v).encode()
            vals.append(v)
        return b"".join([vals[p] if p.__class__ is int else p for p in self.parts])


def _emit_text(t: Template, text: str, slots: list) -> None:
    pos = 0
    for s, e, slot in sorted(slots):
        if s < pos:
            continue
        t.lit(text[pos:s].encode("utf-8", "surrogateescape"))
        t.slot(slot, "t")
        pos = e
    t.lit(text[pos:].encode("utf-8", "surrogateescape"))


def compile_short(lines) -> Template:
    t = Template()
    for raw in lines:
        text = raw.decode("utf-8", "surrogateescape")
        _emit_text(t, text, short_slots(text))
        t.end_line()
    t.close()
    return t


def compile_json(lines) -> Template:
    t = Template()
    for raw in lines:
        text = raw.decode("utf-8", "surrogateescape")
        d = json.loads(text)
        slots = [(m.start(1), m.end(1), ("us", int(m.group(1)), 0)) for m in JSON_US_RE.finditer(text)]
        if d.get("SYSLOG_IDENTIFIER") == "oai-to-circuit":
            slots += [(m.start(1), m.end(1), ("pid", int(m.group(1)), 0)) for m in JSON_PID_RE.finditer(text)]
        msg = d.get("MESSAGE")
        if isinstance(msg, list):
            # the byte array: shift inside the decoded bytes, write the slots back as numbers
            a = text.index('"MESSAGE":[') + len('"MESSAGE":[')
            b = text.index("]", a)
            nums = text[a:b].split(",")
            mtext = bytes(int(x) for x in nums).decode("latin-1")  # 1 char per byte: spans map 1:1
            outside = [s for s in slots if s[1] <= a or s[0] >= b]
            _emit_text_with_array(t, text, outside, a, b, nums, message_slots(mtext))
        else:
            _emit_text(t, text, slots + [s for s in message_slots(text) if s[2][0] != "pid" or
                                         d.get("SYSLOG_IDENTIFIER") == "oai-to-circuit"])
        t.end_line()
    t.close()
    return t


def _emit_text_with_array(t, text, outside, a, b, nums, inner) -> None:
    before = [s for s in outside if s[1] <= a]
    after = [(s - b, e - b, slot) for s, e, slot in outside if s >= b]
    _emit_text(t, text[:a], before)
    segs = []
    pos = 0
    for s, e, slot in sorted(inner):
        if s < pos:
            continue
        if s > pos:
            segs.append(",".join(nums[pos:s]).encode())
        segs.append(slot)
        pos = e
    if pos < len(nums):
        segs.append(",".join(nums[pos:]).encode())
    for i, seg in enumerate(segs):
        if i:
            t.lit(b",")
        if isinstance(seg, bytes):
            t.lit(seg)
        else:
            t.slot(seg, "a")
    _emit_text(t, text[b:], after)


# -- sources -----------------------------------------------------------------------------------
def _source_lines(service: str, view: str) -> list:
    if view == "short":
        with gzip.open(FIXTURES / service / "journal.short.txt.gz", "rb") as fh:
            return fh.read().splitlines(keepends=True)
    src = OUT / "src"
    src.mkdir(parents=True, exist_ok=True)
    jfile = src / f"{service}.journal"
    jtext = src / f"{service}.json"
    if not jtext.exists():
        with gzip.open(FIXTURES / service / "service.journal.gz") as fin, open(jfile, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        tmp = jtext.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            subprocess.run(["journalctl", "--file", str(jfile), "--no-pager", "-u", "oai-to-circuit.service",
                            "-o", "json"], stdout=fh, check=True, env=dict(os.environ, TZ="UTC"))
        tmp.rename(jtext)
        jfile.unlink()
    return jtext.read_bytes().splitlines(keepends=True)


_TEMPLATES: dict = {}


def templates(view: str) -> list:
    if view not in _TEMPLATES:
        out = []
        for service in SOURCES:
            lines = _source_lines(service, view)
            if lines and not lines[-1].endswith(b"\n"):
                lines[-1] += b"\n"
            t = compile_short(lines) if view == "short" else compile_json(lines)
            out.append((service, t))
        _TEMPLATES[view] = out
    return _TEMPLATES[view]


def path_for(view: str, size: str, gz: bool = False) -> Path:
    return OUT / f"{view}-{size}.txt{'.gz' if gz else ''}"


def build(view: str, size: str, n_lines: int, gz: bool = False, log=print) -> Path:
    """Write the journal (plain, and gzip when asked); reuse an up-to-date one."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = path_for(view, size)
    meta_path = OUT / f"{view}-{size}.meta.json"
    want = {"version": VERSION, "view": view, "lines": n_lines}
    meta = None
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            meta = None
    fresh = meta is not None and all(meta.get(k) == v for k, v in want.items()) and path.exists() \
        and path.stat().st_size == meta.get("bytes")
    if not fresh:
        started = time.monotonic()
        tpls = templates(view)
        left = n_lines
        replays = 0
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb", buffering=1 << 20) as fh:
            k = 0
            while left > 0:
                for service, t in tpls:
                    if left <= 0:
                        break
                    data = t.render(k * DAY + SOURCE_OFFSET[service], k * PID_STEP)
                    if t.lines > left:
                        cut = -1
                        for _ in range(left):
                            cut = data.index(b"\n", cut + 1)
                        data = data[:cut + 1]
                        left = 0
                    else:
                        left -= t.lines
                    fh.write(data)
                k += 1
                replays = k
        tmp.rename(path)
        meta = dict(want, bytes=path.stat().st_size, replays=replays)
        meta_path.write_text(json.dumps(meta))
        log(f"built {path.relative_to(ROOT)}: {n_lines:,} lines, {meta['bytes'] / 1e6:,.1f} MB, "
            f"{replays} replays ({time.monotonic() - started:.1f}s)")
    if gz:
        gz_path = path_for(view, size, gz=True)
        if not gz_path.exists() or gz_path.stat().st_mtime < path.stat().st_mtime:
            started = time.monotonic()
            tmp = gz_path.with_suffix(".tmp")
            with open(path, "rb") as fin, gzip.open(tmp, "wb", compresslevel=6) as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            tmp.rename(gz_path)
            log(f"built {gz_path.relative_to(ROOT)}: {gz_path.stat().st_size / 1e6:,.1f} MB "
                f"({time.monotonic() - started:.1f}s)")
        return gz_path
    return path


def parse_sizes(text: str) -> list:
    if text == "all":
        return list(SIZES)
    out = []
    for s in text.split(","):
        s = s.strip().lower()
        if s not in SIZES:
            raise SystemExit(f"unknown size {s!r}: choose from {', '.join(SIZES)} or 'all'")
        out.append(s)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10k,100k", help="comma-separated from 10k,100k,1m,5m, or 'all'")
    p.add_argument("--views", default="short,json", help="comma-separated from short,json")
    p.add_argument("--gzip", action="store_true", help="also write .txt.gz copies")
    args = p.parse_args(argv)
    for size in parse_sizes(args.sizes):
        for view in args.views.split(","):
            build(view, size, SIZES[size], gz=args.gzip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
