#!/usr/bin/env python3
"""Benchmark backfill_hec.py: dry runs and real runs to a local HEC, against baselines on the same file.

    python bench/run_bench.py                       # 10k and 100k lines, -o short and -o json (~2 min)
    python bench/run_bench.py --sizes all           # 10k, 100k, 1M, 5M (builds ~7 GB under bench/out/)
    python bench/run_bench.py --sizes 1m --views short --repeat 3

For every journal (bench/make_journals.py builds them) it measures, each in its own process:
  bare      a Python loop that only reads the lines: ``for line in f: pass`` (binary; gzip.open for .gz)
  dry-run   backfill_hec.py --dry-run, the preview table to /dev/null
  real      backfill_hec.py sending for real (default settings) to tests/hec_server.py, a real HEC
            speaker in another process, restarted per run so its request count is this run's
and, on a bounded sample of the same file's events, the one-POST-per-event clients in use today:
  post      requests.post(url, data=event) per event: a new connection per event
  post+0.1  the same with their time.sleep(0.1) between events
whose events/s is extrapolated to the whole file (the output says so).

Wall times are for whole processes (interpreter start included, for the bare loop too); peak RSS
is each process's own maximum resident set (GNU time %M). With --repeat N the fastest of N runs is shown.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

import make_journals

PY = sys.executable
SCRIPT = ROOT / "backfill_hec.py"
HEC_SERVER = ROOT / "tests" / "hec_server.py"
TOKEN = "11111111-2222-4333-8444-555555555555"
NAMES_DB = ROOT / "tests" / "fixtures" / "quota-e749b02.db"

BARE = r"""
import gzip, sys, time
p = sys.argv[1]
t = time.perf_counter()
f = gzip.open(p, "rb") if p.endswith(".gz") else open(p, "rb")
with f:
    for line in f:
        pass
print(time.perf_counter() - t)
"""


# -- processes ---------------------------------------------------------------------------------
TIME = shutil.which("time", path="/usr/bin:/bin")


def run_measured(cmd, *, cwd=None, env=None, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600):
    """Run a process; (wall seconds, peak RSS in MB of that process alone, exit code, stdout, stderr).

    The peak RSS comes from /usr/bin/time (GNU time's %M), which forks the command from its own
    small process: the ru_maxrss that os.wait4 gives for a direct child of this (large) process
    also counts this process's pages, because Linux carries the peak across vfork+exec.
    """
    out_f = tempfile.TemporaryFile() if stdout == subprocess.PIPE else stdout
    err_f = tempfile.TemporaryFile() if stderr == subprocess.PIPE else stderr
    rss_f = None
    if TIME:
        rss_f = tempfile.NamedTemporaryFile(prefix="rss-", delete=False)
        rss_f.close()
        cmd = [TIME, "-f", "%M", "-o", rss_f.name, *cmd]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out_f, stderr=err_f)
    deadline = started + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.002)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)

    def read(f, ours):
        if not ours:
            return ""
        f.seek(0)
        data = f.read().decode("utf-8", "replace")
        f.close()
        return data

    rss = ru.ru_maxrss / 1024.0  # an upper bound, see above
    if rss_f is not None:
        try:
            rss = int(Path(rss_f.name).read_text().split()[-1]) / 1024.0
        except (OSError, ValueError, IndexError):
            pass
        os.unlink(rss_f.name)
    return (wall, rss, proc.returncode, read(out_f, stdout == subprocess.PIPE),
            read(err_f, stderr == subprocess.PIPE))


class HECProcess:
    """tests/hec_server.py in its own process (count only): READY url, then SUMMARY on SIGTERM."""

    def __init__(self):
        self.proc = subprocess.Popen([PY, str(HEC_SERVER), "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.proc.kill()
            raise SystemExit(f"hec_server did not start: {line!r}")
        self.url = line.split(" ", 1)[1]

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out = self.proc.stdout.read()
        self.proc.wait(10)
        m = re.search(r"SUMMARY events=(\d+) requests=(\d+) bytes=(\d+)", out)
        return {"events": int(m.group(1)), "requests": int(m.group(2)), "bytes": int(m.group(3))} if m else {}


# -- measurements ------------------------------------------------------------------------------
def best_of(n, fn):
    runs = [fn() for _ in range(n)]
    return min(runs, key=lambda r: r["wall"])


def bare_loop(path: Path) -> dict:
    wall, rss, code, out, err = run_measured([PY, "-c", BARE, str(path)], stdout=subprocess.PIPE)
    if code != 0:
        raise SystemExit(f"bare loop failed: {err}")
    return {"wall": wall, "loop": float(out.strip()), "rss": rss}


def _env(state: Path, url: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPLUNK_", "QUOTA_"))}
    env["XDG_STATE_HOME"] = str(state)
    if url:
        env["SPLUNK_HEC_URL"] = url
        env["SPLUNK_HEC_TOKEN"] = TOKEN
    return env


def _found(err: str) -> tuple[int, int]:
    m = re.search(r"found:\s+(\d+) events", err)
    s = re.search(r"selected:\s+(\d+) events", err)
    return (int(m.group(1)) if m else 0), (int(s.group(1)) if s else 0)


def dry_run(path: Path, work: Path) -> dict:
    state = Path(tempfile.mkdtemp(dir=work))
    cmd = [PY, str(SCRIPT), "--utc", "--dry-run", "--no-progress", "--db", str(NAMES_DB), str(path)]
    wall, rss, code, _, err = run_measured(cmd, cwd=state, env=_env(state))
    shutil.rmtree(state, ignore_errors=True)
    if code != 0:
        raise SystemExit(f"dry run failed ({code}): {err[-2000:]}")
    found, selected = _found(err)
    return {"wall": wall, "rss": rss, "found": found, "selected": selected}


def export_events(path: Path, work: Path) -> Path:
    """The events of the file as HEC bodies (--dry-run --output ndjson), for the delivery-only run."""
    state = Path(tempfile.mkdtemp(dir=work))
    out = work / (path.name + ".events.ndjson")
    with open(out, "wb") as fh:
        cmd = [PY, str(SCRIPT), "--utc", "--dry-run", "--output", "ndjson", "--no-progress", "--db", str(NAMES_DB),
               str(path)]
        wall, rss, code, _, err = run_measured(cmd, cwd=state, env=_env(state), stdout=fh)
    shutil.rmtree(state, ignore_errors=True)
    if code != 0:
        raise SystemExit(f"export failed ({code}): {err[-2000:]}")
    return out


def real_run(path: Path, work: Path, replay: bool = False) -> dict:
    """backfill_hec.py for real (fresh ledger) to a HEC server started for this run alone.

    replay=True: ``--replay FILE`` of ready HEC bodies, i.e. delivery only (no journal to read),
    like the one-POST clients, which are also handed ready bodies."""
    state = Path(tempfile.mkdtemp(dir=work))
    hec = HECProcess()
    try:
        cmd = [PY, str(SCRIPT), "--utc", "--no-progress"]
        cmd += ["--replay", str(path)] if replay else ["--db", str(NAMES_DB), str(path)]
        wall, rss, code, _, err = run_measured(cmd, cwd=state, env=_env(state, hec.url))
    finally:
        summary = hec.stop()
    shutil.rmtree(state, ignore_errors=True)
    if code != 0:
        raise SystemExit(f"real run failed ({code}): {err[-2000:]}")
    m = re.search(r"delivered: (\d+)\s+failed: (\d+)", err)
    delivered, failed = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return {"wall": wall, "rss": rss, "delivered": delivered, "failed": failed,
            "hec_events": summary.get("events"), "requests": summary.get("requests"),
            "hec_bytes": summary.get("bytes")}


def sample_bodies(path: Path, n: int) -> list[bytes]:
    """The first n HEC bodies the backfill would send from this file (its own reader and encoder)."""
    from oai_to_circuit.backfill import BackfillOptions, BackfillReport, journal_candidates
    from oai_to_circuit.names import name_lookup

    opts = BackfillOptions(inputs=[str(path)], zone=timezone.utc, progress=False)
    report = BackfillReport(run_id="bench", dry_run=True)
    out = []
    for c in journal_candidates(opts, report, name_lookup(str(NAMES_DB)), lambda m: None):
        out.append(c.data)
        if len(out) >= n:
            break
    return out


def one_post_per_event(url: str, bodies: list[bytes], pause: float) -> dict:
    """What operators run today: requests.post per event (a new connection each), optional sleep."""
    import requests

    headers = {"Authorization": f"Splunk {TOKEN}", "Content-Type": "application/json"}
    event_url = url + "/services/collector/event"
    ok = 0
    started = time.perf_counter()
    for body in bodies:
        r = requests.post(event_url, data=body, headers=headers, timeout=10)
        ok += r.status_code == 200
        if pause:
            time.sleep(pause)
    wall = time.perf_counter() - started
    return {"n": len(bodies), "ok": ok, "wall": wall, "eps": len(bodies) / wall, "requests": len(bodies)}


# -- the run -----------------------------------------------------------------------------------
def fmt_n(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", default="10k,100k", help="comma-separated from 10k,100k,1m,5m, or 'all' (default 10k,100k)")
    p.add_argument("--views", default="short,json", help="comma-separated from short,json (default both)")
    p.add_argument("--gzip", nargs="?", const="short", default="", metavar="VIEWS",
                   help="also run on .txt.gz copies (gzip -6) of the journals of these views (default: short)")
    p.add_argument("--repeat", type=int, default=1, help="runs per measurement, fastest shown (default 1)")
    p.add_argument("--sample", type=int, default=200, help="events for the unpaused one-POST client (default 200)")
    p.add_argument("--paused-sample", type=int, default=50,
                   help="events for the client with the 0.1 s pause (default 50: 5 s of sleeping)")
    p.add_argument("--no-real", action="store_true", help="dry runs and bare loops only")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    args = p.parse_args(argv)

    sizes = make_journals.parse_sizes(args.sizes)
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    for v in views:
        if v not in make_journals.VIEWS:
            raise SystemExit(f"unknown view {v!r}")
    work = Path(tempfile.mkdtemp(prefix="backfill-bench-"))
    results = []
    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} cores; command: python bench/run_bench.py "
          + " ".join(argv if argv is not None else sys.argv[1:]), flush=True)
    try:
        for size in sizes:
            for view in views:
                files = [make_journals.build(view, size, make_journals.SIZES[size], log=lambda m: print("#", m))]
                if view in args.gzip.split(","):
                    files.append(make_journals.build(view, size, make_journals.SIZES[size], gz=True,
                                                     log=lambda m: print("#", m)))
                for path in files:
                    results.append(bench_file(path, size, view, args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def bench_file(path: Path, size: str, view: str, args, work: Path) -> dict:
    lines = make_journals.SIZES[size]
    mb = path.stat().st_size / 1e6
    plain_mb = make_journals.path_for(view, size).stat().st_size / 1e6
    label = f"{view}-{size}{' .gz' if path.suffix == '.gz' else ''}"
    print(f"# {label}: {path.relative_to(ROOT)} ({mb:,.1f} MB)", flush=True)
    bare_loop(path)  # page cache warm-up, same for everyone
    bare = best_of(args.repeat, lambda: bare_loop(path))
    dry = best_of(args.repeat, lambda: dry_run(path, work))
    r = {"label": label, "file": str(path.relative_to(ROOT)), "view": view, "size": size, "lines": lines,
         "mb": plain_mb, "file_mb": mb, "bare": bare, "dry": dry}
    print(f"#   bare {bare['wall']:.3f}s  dry-run {dry['wall']:.3f}s  ({dry['found']} events found, "
          f"{dry['selected']} selected)", flush=True)
    if not args.no_real:
        real = best_of(args.repeat, lambda: real_run(path, work))
        r["real"] = real
        if real["hec_events"] != real["delivered"] or real["failed"]:
            print(f"#   WARNING: HEC stored {real['hec_events']} events, the run says {real['delivered']} "
                  f"delivered, {real['failed']} failed", flush=True)
        hec = HECProcess()
        try:
            bodies = sample_bodies(path, max(args.sample, args.paused_sample))
            r["post"] = one_post_per_event(hec.url, bodies[:args.sample], 0.0)
            r["post_paused"] = one_post_per_event(hec.url, bodies[:args.paused_sample], 0.1)
        finally:
            hec.stop()
        events = export_events(path, work)
        r["replay"] = best_of(args.repeat, lambda: real_run(events, work, replay=True))
        events.unlink()
        print(f"#   real {real['wall']:.3f}s ({real['delivered']} delivered, {real['requests']} requests)  "
              f"replay {r['replay']['wall']:.3f}s  post {r['post']['eps']:.0f} ev/s  "
              f"post+0.1 {r['post_paused']['eps']:.2f} ev/s", flush=True)
    return r


def report(results: list, args) -> None:
    print()
    print("## dry run (--dry-run, preview table to /dev/null) vs the bare read loop on the same file")
    hdr = (f"{'journal':<16} {'lines':>6} {'MB':>7} {'events':>7} {'bare s':>7} {'dry s':>7} {'x bare':>6}"
           f" {'lines/s':>8} {'events/s':>8} {'MB/s':>6} {'RSS MB':>7}")
    print(hdr)
    for r in results:
        d, b = r["dry"], r["bare"]
        print(f"{r['label']:<16} {fmt_n(r['lines']):>6} {r['file_mb']:>7.1f} {d['selected']:>7} {b['wall']:>7.3f}"
              f" {d['wall']:>7.3f} {d['wall'] / b['wall']:>6.1f} {fmt_n(r['lines'] / d['wall']):>8}"
              f" {fmt_n(d['selected'] / d['wall']):>8} {r['mb'] / d['wall']:>6.0f} {d['rss']:>7.1f}")
    print("  bare s: whole process (interpreter start + the loop); loop alone: "
          + ", ".join(f"{r['label']} {r['bare']['loop']:.3f}s" for r in results))
    print("  MB/s counts the uncompressed journal text; events = events selected (usage events; errors are"
          " not sent by default)")
    if args.no_real:
        return
    print()
    print("## real runs (default settings) to tests/hec_server.py in another process, vs one-POST-per-event clients")
    print("   journal: backfill_hec.py FILE (read, extract, send);  replay: backfill_hec.py --replay EVENTS.ndjson"
          " (the same events as ready HEC bodies: delivery only, like the one-POST clients)")
    hdr = (f"{'journal':<16} {'run':<7} {'events':>7} {'wall s':>7} {'events/s':>8} {'lines/s':>8} {'MB/s':>6}"
           f" {'RSS MB':>7} {'req':>5} {'req/1k ev':>9} {'x post':>7} {'x post+.1':>9}")
    print(hdr)
    for r in results:
        pe, pp = r["post"]["eps"], r["post_paused"]["eps"]
        for kind in ("real", "replay"):
            q = r[kind]
            eps = q["delivered"] / q["wall"] if q["wall"] else 0.0
            per_k = 1000.0 * q["requests"] / q["delivered"] if q["delivered"] else float("nan")
            lines = f"{fmt_n(r['lines'] / q['wall']):>8}" if kind == "real" else f"{'-':>8}"
            mbs = f"{r['mb'] / q['wall']:>6.0f}" if kind == "real" else f"{'-':>6}"
            print(f"{r['label'] if kind == 'real' else '':<16} {'journal' if kind == 'real' else 'replay':<7}"
                  f" {q['delivered']:>7} {q['wall']:>7.3f} {fmt_n(eps):>8} {lines} {mbs} {q['rss']:>7.1f}"
                  f" {q['requests']:>5} {per_k:>9.2f} {eps / pe:>7.1f} {eps / pp:>9.0f}")
    print()
    print("   baselines, same file: requests.post per event (a new connection each), without / with time.sleep(0.1)")
    print(f"{'journal':<16} {'post ev/s':>9} {'(sample)':>8} {'post+.1 ev/s':>12} {'(sample)':>8}"
          f" {'whole file, post':>16} {'post+.1':>9}")
    for r in results:
        pe, pp, n = r["post"]["eps"], r["post_paused"]["eps"], r["real"]["delivered"]
        print(f"{r['label']:<16} {pe:>9.0f} {r['post']['n']:>8} {pp:>12.2f} {r['post_paused']['n']:>8}"
              f" {_dur(n / pe):>16} {_dur(n / pp):>9}")
    print("  measured on the first (sample) events of the file; 'whole file' extrapolates that rate to all of its"
          " events. x post / x post+.1: events/s of the run over the baseline's.")
    print()
    targets(results)


def _dur(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def targets(results: list) -> None:
    print("## issue 6 targets")
    by = {r["label"]: r for r in results}
    for label in ("short-1m", "short-1m .gz"):
        r = by.get(label)
        if r:
            ratio = r["dry"]["wall"] / r["bare"]["wall"]
            print(f"  dry run on {label}: {ratio:.1f}x the bare read loop (target <= 3x): "
                  f"{'MET' if ratio <= 3 else 'NOT MET'}")
    if not any(r["label"] in ("short-1m", "short-1m .gz") for r in results):
        print("  dry run on the 1M-line -o short journal: not measured (add --sizes 1m)")
    every = [r for r in results if "real" in r]
    # throughput targets: on files with enough events that the ~0.3 s start of a process does not decide
    reals = [r for r in every if r["real"]["delivered"] >= 10_000] or every
    if reals and reals is not every:
        print(f"  events/s targets judged on the runs with >= 10,000 events ({', '.join(r['label'] for r in reals)})")
    for kind, what in (("real", "journal runs"), ("replay", "replay runs (delivery only)")):
        if not reals:
            break
        worst_p = min(r[kind]["delivered"] / r[kind]["wall"] / r["post_paused"]["eps"] for r in reals)
        worst_u = min(r[kind]["delivered"] / r[kind]["wall"] / r["post"]["eps"] for r in reals)
        at = min(reals, key=lambda r: r[kind]["delivered"] / r[kind]["wall"] / r["post"]["eps"])["label"]
        print(f"  {what}: >= {worst_p:,.0f}x the paused one-POST client (target >= 1000x): "
              f"{'MET' if worst_p >= 1000 else 'NOT MET'}; >= {worst_u:,.1f}x the unpaused one (target >= 20x):"
              f" {'MET' if worst_u >= 20 else 'NOT MET'} (lowest: {at})")
    reals = every
    if reals:
        over = [r["label"] for r in reals for k in ("real", "replay")
                if r[k]["requests"] > max(1, -(-r[k]["delivered"] // 400))]
        worst_q = max(1000.0 * r[k]["requests"] / max(1, r[k]["delivered"]) for r in reals for k in ("real", "replay")
                      if r[k]["delivered"] >= 400) if any(r["real"]["delivered"] >= 400 for r in reals) else 0.0
        print(f"  HTTP requests: at most {worst_q:.2f} per 1000 events where there were >= 400 events; every run"
              f" <= ceil(events / 400) requests (target 1 per 400): {'MET' if not over else 'NOT MET: ' + ', '.join(over)}")
    for view in ("short", "json"):
        rs = [r for r in results if r["view"] == view and not r["label"].endswith(".gz")]
        if len(rs) >= 2:
            peaks = [max(r["dry"]["rss"], r.get("real", {}).get("rss", 0.0)) for r in rs]
            spread = max(peaks) - min(peaks)
            sizes = f"{rs[0]['size']}..{rs[-1]['size']}"
            print(f"  peak RSS -o {view} {sizes}: {min(peaks):.1f}..{max(peaks):.1f} MB, spread {spread:.1f} MB "
                  f"(target spread <= 10 MB, all < 80 MB): {'MET' if spread <= 10 and max(peaks) < 80 else 'NOT MET'}")


if __name__ == "__main__":
    sys.exit(main())
