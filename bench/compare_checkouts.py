#!/usr/bin/env python3
"""Dry and real runs of several checkouts of backfill_hec.py on one benchmark journal, side by side.

    git worktree add /tmp/before <commit>
    python bench/compare_checkouts.py --size 1m before=/tmp/before now=.

Each checkout's own backfill_hec.py and oai_to_circuit/ run (the script's directory comes first on
sys.path); the journal, the HEC server and the measuring are this checkout's (bench/run_bench.py).
Dry runs: fastest of 3; real runs: fastest of 2, each to a fresh HEC server and a fresh ledger.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

import make_journals
import run_bench


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkouts", nargs="+", metavar="LABEL=DIR")
    p.add_argument("--size", default="1m", choices=list(make_journals.SIZES))
    p.add_argument("--view", default="short", choices=make_journals.VIEWS)
    args = p.parse_args(argv)
    path = make_journals.build(args.view, args.size, make_journals.SIZES[args.size], log=lambda m: print("#", m))
    work = Path(tempfile.mkdtemp(prefix="backfill-compare-"))
    print(f"# {path.relative_to(run_bench.ROOT)}")
    print(f"{'checkout':<24} {'dry s':>7} {'RSS MB':>7} {'real s':>7} {'RSS MB':>7} {'events':>7} {'req':>5} {'events/s':>9}")
    try:
        for item in args.checkouts:
            label, _, where = item.partition("=")
            run_bench.SCRIPT = Path(where or label).resolve() / "backfill_hec.py"
            d = run_bench.best_of(3, lambda: run_bench.dry_run(path, work))
            r = run_bench.best_of(2, lambda: run_bench.real_run(path, work))
            print(f"{label:<24} {d['wall']:>7.2f} {d['rss']:>7.1f} {r['wall']:>7.2f} {r['rss']:>7.1f} {r['delivered']:>7}"
                  f" {r['requests']:>5} {r['delivered'] / r['wall']:>9,.0f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
