"""kill -9 in the middle of a real run, run again: every event stored once, doubles only where reported."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from journal_views import FIXTURES, TOKEN

SCRIPT = Path(__file__).resolve().parent.parent / "backfill_hec.py"


def test_killed_run_then_rerun_stores_each_event_once(hec_server, tmp_path):
    src = FIXTURES / "service-e749b02" / "journal.short.txt.gz"
    env = dict(os.environ, SPLUNK_HEC_URL=hec_server.url, SPLUNK_HEC_TOKEN=TOKEN, XDG_STATE_HOME=str(tmp_path))
    cmd = [sys.executable, str(SCRIPT), "--utc", "--batch-size", "10", "--max-eps", "150", "--no-progress", str(src)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while len(hec_server.events) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(hec_server.events)
    assert 100 <= first < 319, "the run must die part-way for this test to mean anything"

    done = subprocess.run(cmd[:-1] + ["--verbose", str(src)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stderr + done.stdout
    counts = Counter(b["event"]["backfill_id"] for b in hec_server.events)
    assert len(counts) == 319  # nothing missing
    doubled = {i for i, n in counts.items() if n > 1}
    assert all(n <= 2 for n in counts.values())
    reported = set(re.findall(r"resend ([0-9a-f]{32}) .*in flight when an earlier run stopped", done.stderr))
    assert doubled <= reported  # anything doubled was announced as possibly doubled
    if reported:
        (listing,) = tmp_path.glob("backfill-maybe-doubled-*.txt")
        assert set(listing.read_text().split()) == reported
    already = int(re.search(r"(\d+) already sent by an earlier run", done.stderr).group(1))
    delivered = int(re.search(r"delivered: (\d+)", done.stderr).group(1))
    assert already + delivered == 319  # the second run covers exactly the rest
    assert already <= first and len(hec_server.events) == first + delivered


def test_sigterm_while_hec_is_down_keeps_every_event_and_cries_no_wolf(hec_server, tmp_path):
    """Stopped (SIGTERM) while retrying a refused connection: all in the dead letters, none 'maybe doubled'."""
    src = FIXTURES / "service-e749b02" / "journal.short.txt.gz"
    env = dict(os.environ, SPLUNK_HEC_URL="http://127.0.0.1:1", SPLUNK_HEC_TOKEN=TOKEN, XDG_STATE_HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--utc", "--no-progress", str(src)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    (dead,) = tmp_path.glob("backfill-dead-letters-*.ndjson")
    import json

    letters = [json.loads(x) for x in dead.read_text().splitlines()]
    assert len(letters) == 319 and not any(d["maybe_sent"] for d in letters)  # one batch, never reached HEC
    assert {d["reason"] for d in letters} == {"not sent: the run was stopped while HEC was not accepting:"
                                              " connection refused (http://127.0.0.1:1)"}
    assert "STOPPED:   on request (SIGTERM or Ctrl-C): 0 events delivered, the rest of the input not read." in err
    import sqlite3

    ledger = sqlite3.connect(tmp_path / "oai-to-circuit" / "backfill-ledger.db")
    assert ledger.execute("SELECT count(*) FROM deliveries WHERE state='inflight'").fetchone() == (0,)
    ledger.close()
    env["SPLUNK_HEC_URL"] = hec_server.url
    again = subprocess.run([sys.executable, str(SCRIPT), "--utc", "--no-progress", str(src)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "left unconfirmed by an earlier run" not in again.stderr and "may be doubled" not in again.stderr
    assert not list(tmp_path.glob("backfill-maybe-doubled-*.txt"))
    assert len(hec_server.events) == 319


def test_one_sigterm_mid_post_waits_for_the_answer_so_nothing_is_doubled(hec_server, tmp_path):
    """The first SIGTERM lets the POST on the wire finish: its events are delivered, not 'maybe sent'."""
    src = FIXTURES / "service-e749b02" / "journal.short.txt.gz"
    env = dict(os.environ, SPLUNK_HEC_URL=hec_server.url, SPLUNK_HEC_TOKEN=TOKEN, XDG_STATE_HOME=str(tmp_path))
    hec_server.delay_next(2)  # stores the first batch, answers 2 s later
    cmd = [sys.executable, str(SCRIPT), "--utc", "--no-progress", "--batch-size", "100", str(src)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(hec_server.events) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert len(hec_server.events) == 100
    assert "STOPPED:   on request (SIGTERM or Ctrl-C): 100 events delivered, the rest of the input not read." in err
    assert not list(tmp_path.glob("backfill-dead-letters-*.ndjson"))  # nothing was left unconfirmed
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "100 already sent by an earlier run" in again.stderr and "may be doubled" not in again.stderr
    assert Counter(Counter(b["event"]["backfill_id"] for b in hec_server.events).values()) == {1: 319}


def test_stopped_mid_post_the_events_hec_may_hold_are_kept_in_flight_and_named_on_replay(hec_server, tmp_path):
    """Two SIGTERMs while HEC holds the body but has not answered: dead letters say maybe_sent, replay names
    doubles."""
    import json

    src = FIXTURES / "service-e749b02" / "journal.short.txt.gz"
    env = dict(os.environ, SPLUNK_HEC_URL=hec_server.url, SPLUNK_HEC_TOKEN=TOKEN, XDG_STATE_HOME=str(tmp_path))
    hec_server.delay_next(20)  # stores the first batch, then keeps the client waiting
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--utc", "--no-progress", "--timeout", "60",
                             "--batch-size", "100", str(src)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(hec_server.events) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # the second: at once
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert len(hec_server.events) == 100
    assert "STOPPED:   at once (a second SIGTERM or Ctrl-C): 0 events delivered" in err
    (dead,) = tmp_path.glob("backfill-dead-letters-*.ndjson")
    letters = [json.loads(x) for x in dead.read_text().splitlines()]
    assert len(letters) == 100 and all(d["maybe_sent"] for d in letters)
    assert "; 100 of them may have reached HEC all the same" in err
    hec_server.clear_faults()
    again = subprocess.run([sys.executable, str(SCRIPT), "--replay", str(dead), "--verbose", "--no-progress"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "100 events were left unconfirmed by an earlier run" in again.stderr
    counts = Counter(b["event"]["backfill_id"] for b in hec_server.events)
    assert len(counts) == 100 and set(counts.values()) == {2}  # doubled, and every double was named
    named = set(re.findall(r"resend ([0-9a-f]{32}) .*in flight", again.stderr))
    assert named == set(counts)
    (listing,) = tmp_path.glob("backfill-maybe-doubled-*.txt")
    assert set(listing.read_text().split()) == set(counts)
