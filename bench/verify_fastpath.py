#!/usr/bin/env python3
"""Check that the reader's fast paths change nothing: records and counts equal the line-by-line path.

    python bench/verify_fastpath.py [--sizes 10k,100k]

The block scan (JournalReader._read_blocks: needles, same-prefix runs, _take_run) is compared with
the plain per-line loop (the same keep(), offered every line, every line parsed from scratch) on the
benchmark journals and on
edge cases built from them: CRLF line ends, ANSI colours and blob lines inside payload blocks,
journalctl markers, a 3 MB line, no newline at the end, short and json views concatenated, gzip,
and block sizes small enough to cut payload blocks and lines anywhere.
"""
from __future__ import annotations

import argparse
import gzip
import io
import random
import sys
from dataclasses import asdict
from datetime import timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent

import make_journals
from oai_to_circuit import journal
from oai_to_circuit.journal import JournalReader, ReadStats
from oai_to_circuit.usage_log import ExtractStats, UsageExtractor, extract


class PlainReader(JournalReader):
    """Every line parsed from scratch: no same-prefix shortcut."""

    def parse_line(self, text, line_no, source):
        self._pfx = self._pfx_b = None
        return super().parse_line(text, line_no, source)


def run(data: bytes, fast: bool, block_size: int = 1 << 20, gz: bool = False):
    ex = UsageExtractor(timezone.utc, ExtractStats())
    stats = ReadStats()
    if fast:
        reader = JournalReader(timezone.utc, stats=stats, keep=ex.keep)  # keep's owner offers needles
        src = io.BufferedReader(io.BytesIO(gzip.compress(data) if gz else data))
        lines = journal._maybe_gzip(src)
    else:
        reader = PlainReader(timezone.utc, stats=stats, keep=lambda raw: ex.keep(raw))  # no owner: per line
        lines = iter(data.splitlines(keepends=True))
    old = journal.BLOCK_SIZE
    journal.BLOCK_SIZE = block_size
    try:
        recs = [asdict(r) for r in extract(reader.read("x", lines), ex)]
    finally:
        journal.BLOCK_SIZE = old
    return recs, (stats.lines, stats.bytes, stats.parsed, stats.skipped, stats.formats, stats.blob_lines), \
        asdict(ex.stats)


def edge_cases(short: bytes, js: bytes) -> dict:
    rnd = random.Random(6)
    lines = short.splitlines(keepends=True)
    out = {}
    out["crlf"] = b"".join(ln[:-1] + b"\r\n" for ln in lines)
    colored = []
    for ln in lines:
        if rnd.random() < 0.05 and b"]: " in ln:
            i = ln.index(b"]: ") + 3
            ln = ln[:i] + b"\x1b[32m" + ln[i:]
        colored.append(ln)
    out["ansi"] = b"".join(colored)
    blobbed = []
    for ln in lines:
        blobbed.append(ln)
        if rnd.random() < 0.03:
            blobbed.append(ln[:ln.index(b"]: ") + 3] + b"[1.2KB blob data]\n" if b"]: " in ln else b"[9B blob data]\n")
    out["blob"] = b"".join(blobbed)
    marked = [b"-- Logs begin at Thu 2026-12-03 18:00:00 UTC, end at Fri 2027-01-08 19:00:00 UTC. --\n"]
    for ln in lines:
        marked.append(ln)
        if rnd.random() < 0.01:
            marked.append(rnd.choice([b"-- Reboot --\n", b"-- Boot 0123456789abcdef --\n", b"[oddly bracketed]\n",
                                      b"-- not a marker\n", b"\n"]))
    out["markers"] = b"".join(marked)
    out["long line"] = short[: len(short) // 2] + b"Dec 03 18:26:10 proxy-01 x[1]: " + b"y" * 3_000_000 + b"\n" + \
        short[len(short) // 2:]
    out["no final newline"] = short.rstrip(b"\n")
    out["short+json"] = short + js
    out["json+short"] = js + short
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10k", help="benchmark journals to check (default 10k)")
    args = p.parse_args(argv)
    failures = 0
    cases = []
    for size in make_journals.parse_sizes(args.sizes):
        short = make_journals.build("short", size, make_journals.SIZES[size], log=lambda m: None).read_bytes()
        js = make_journals.build("json", size, make_journals.SIZES[size], log=lambda m: None).read_bytes()
        cases += [(f"short-{size}", short), (f"json-{size}", js)]
    # edge cases from one whole replay (both examples: era A, era D at INFO and at DEBUG with payload blocks)
    one = make_journals.SOURCES and sum(t.lines for _, t in make_journals.templates("short"))
    short = b"".join(make_journals.build("short", "100k", make_journals.SIZES["100k"], log=lambda m: None)
                     .open("rb").readlines()[:one])
    js = b"".join(make_journals.build("json", "100k", make_journals.SIZES["100k"], log=lambda m: None)
                  .open("rb").readlines()[:one - 1])
    cases += [(k, v) for k, v in edge_cases(short, js).items()]
    for name, data in cases:
        want = run(data, fast=False)
        variants = [(1 << 20, False), (1 << 20, True), (4096, False), (333, False)]
        if len(data) > 20_000_000:
            variants = variants[:2]
        for block_size, gz in variants:
            got = run(data, fast=True, block_size=block_size, gz=gz)
            ok = got == want
            failures += not ok
            what = ("records" if got[0] != want[0] else "read stats" if got[1] != want[1] else "extract stats") \
                if not ok else ""
            print(f"{'ok  ' if ok else 'FAIL'} {name:<24} block {block_size:>7}{' gz' if gz else '   '} "
                  f"{len(want[0]):>6} records {want[1][0]:>8} lines {what}", flush=True)
    print("all equal" if not failures else f"{failures} differences")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
