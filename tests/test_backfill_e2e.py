"""backfill_hec.py end to end: real journalctl output in, a real HEC server on 127.0.0.1 out."""
from __future__ import annotations

import json
import os
import random
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

import backfill_hec
from journal_views import FIXTURES, TOKEN, db_path, expected, fixture, journalctl_view, live_outcome, names_by_hash

E7 = "service-e749b02"
A9 = "service-9c7664e"


def run(capsys, *argv):
    code = backfill_hec.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def key(ev):
    from oai_to_circuit.events import hash_subkey

    return (hash_subkey(ev["subkey"]), ev["model"], ev.get("prompt_tokens"), ev.get("completion_tokens"),
            ev.get("total_tokens"))


def pair_with_expected(received, records):
    """Pair every received body with one expected/ record: same identity (subkey hash, model, the three
    token counts), time within 0.01 s of the payload's; none left over on either side. [(body, record)]"""
    pool = {}
    for d in records:
        pool.setdefault(key(d["payload"]["event"]), []).append(d)
    assert len(received) == len(records)
    pairs = []
    for body in received:
        cands = pool.get(key(body["event"]))
        assert cands, f"unexpected event {key(body['event'])}"
        best = min(cands, key=lambda d: abs(d["payload"]["time"] - body["time"]))
        assert abs(best["payload"]["time"] - body["time"]) < 0.01, (key(body["event"]), body["time"])
        cands.remove(best)
        pairs.append((body, best))
    assert sum(len(v) for v in pool.values()) == 0
    return pairs


def assert_matches_expected(received, service):
    """Every received event pairs with one expected payload (accepted or failed): identity, time within 0.01 s."""
    accepted, failed = expected(service)
    return pair_with_expected(received, accepted + failed)


def assert_live_send_flags(pairs):
    """backfill_live_send says what the service saw of each event's own send: the timeouts uncertain."""
    for body, rec in pairs:
        assert body["event"]["backfill_live_send"] == live_outcome(rec), (key(body["event"]), rec["client_side"])


def assert_names_as_in_quota_db(bodies, service):
    """friendly_name/email exactly as subkey_names gives them for each subkey (by its sha256: form); a subkey
    without a row, or an empty email, leaves the field out, as the live service does."""
    names = names_by_hash(service)
    for body in bodies:
        ev = body["event"]
        name, email = names.get(ev["subkey"], (None, None))
        assert ev.get("friendly_name", None) == name, ev["subkey"]
        assert ev.get("email", None) == email, ev["subkey"]
        assert ("friendly_name" in ev) == (name is not None) and ("email" in ev) == (email is not None)


def assert_the_319_of_e749b02(bodies):
    """What HEC must receive from any view of e749b02's journal; returns the sorted backfill_ids."""
    assert len(bodies) == 319
    assert_matches_expected(bodies, E7)
    assert_names_as_in_quota_db(bodies, E7)
    # the figures of quota.db and the expected/ files themselves, so that a wrong table cannot pass
    assert Counter(b["event"].get("friendly_name") for b in bodies) == {
        "Team Alpha": 91, "Team Bravo": 61, "Delta Analytics": 49, "Équipe Écho": 43, None: 75}
    assert sum("email" in b["event"] for b in bodies) == 91 + 49 + 43
    for body in bodies:
        ev = body["event"]
        assert ev["backfill"] is True
        assert body["index"] == "oai_circuit" and body["sourcetype"] == "llm:usage"
        assert body["source"] == "oai-to-circuit" and body["host"] == "proxy-01"
    ids = sorted(b["event"]["backfill_id"] for b in bodies)
    assert len(set(ids)) == 319
    return ids


def send(env, capsys, src, *argv):
    """A real run to the test's HEC, with a ledger of its own (so every run sends all it selects);
    returns (bodies HEC received from this run, the report)."""
    before = len(env.events)
    ledger = Path.cwd() / f"ledger-{before}-{len(env.requests)}.db"
    code, out, err = run(capsys, "--utc", "--ledger", ledger, *argv, src)
    assert code == 0, err
    assert TOKEN not in out + err
    return env.events[before:], err


def test_e749b02_short_sends_exactly_319_usage_events(env, capsys):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    code, out, err = run(capsys, "--utc", "--db", db_path(E7), src)
    assert code == 0, err
    assert_the_319_of_e749b02(env.events)
    assert_live_send_flags(assert_matches_expected(env.events, E7))
    assert Counter(b["event"]["backfill_live_send"] for b in env.events) == {"delivered": 264, "failed": 53,
                                                                            "uncertain": 2}
    assert "delivered: 319    failed: 0" in err
    assert TOKEN not in out + err


def test_shipped_journal_json_sends_the_same_319_with_the_same_backfill_ids(env, capsys):
    """The operator's own `journalctl -o json` extract (shipped, so no journalctl is needed), sent for real."""
    short, _ = send(env, capsys, FIXTURES / E7 / "journal.short.txt.gz", "--db", db_path(E7))
    bodies, err = send(env, capsys, FIXTURES / E7 / "journal.json.gz", "--db", db_path(E7))
    assert "journalctl views seen: json;" in err
    assert assert_the_319_of_e749b02(bodies) == assert_the_319_of_e749b02(short)
    assert_live_send_flags(assert_matches_expected(bodies, E7))


def test_short_iso_precise_view_sends_the_same_319_with_the_same_backfill_ids(env, capsys, tmp_path):
    short, _ = send(env, capsys, FIXTURES / E7 / "journal.short.txt.gz", "--db", db_path(E7))
    bodies, err = send(env, capsys, journalctl_view(E7, "short-iso-precise", tmp_path), "--db", db_path(E7))
    assert "journalctl views seen: short-iso-precise;" in err
    assert assert_the_319_of_e749b02(bodies) == assert_the_319_of_e749b02(short)
    assert_live_send_flags(assert_matches_expected(bodies, E7))


def test_regenerated_json_view_gives_the_same_bodies_as_the_shipped_one(env, capsys, tmp_path):
    """journalctl --file service.journal -o json prints what the shipped journal.json.gz holds: same bodies."""
    views = {}
    for src in (FIXTURES / E7 / "journal.json.gz", journalctl_view(E7, "json", tmp_path)):
        code, out, err = run(capsys, "--utc", "--dry-run", "--output", "ndjson", "--db", db_path(E7), src)
        assert code == 0, err
        views[src] = sorted(out.splitlines())
    a, b = views.values()
    assert a == b and len(a) == 319
    assert env.requests == []  # dry runs send nothing


def test_other_zone_views_give_the_same_events(env, capsys, tmp_path):
    """journalctl printed in New York: --tz says so, and times and ids come out the same."""
    base = journalctl_view(E7, "short", tmp_path)
    ny = journalctl_view(E7, "short", tmp_path, tz="America/New_York")
    _, out_utc, _ = run(capsys, "--utc", "--dry-run", "--output", "ndjson", base)
    code, out_ny, err = run(capsys, "--tz", "America/New_York", "--dry-run", "--output", "ndjson", ny)
    assert code == 0, err
    a = sorted((b["event"]["backfill_id"], b["time"]) for b in map(json.loads, out_utc.splitlines()))
    b = sorted((b["event"]["backfill_id"], b["time"]) for b in map(json.loads, out_ny.splitlines()))
    assert a == b and len(a) == 319


def test_only_failed_sends_the_55_failed_usage_events(env, capsys):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    _, failed = expected(E7)
    assert len(failed) == 55
    # the failures as the service's client saw them: 42 HTTP 503, 11 refused, 2 timeouts HEC still got
    assert Counter(live_outcome(d) for d in failed) == {"failed": 53, "uncertain": 2}
    assert all(d["receiver_saw_body"] for d in failed if live_outcome(d) == "uncertain")
    code, out, err = run(capsys, "--utc", "--only-failed", "--db", db_path(E7), src)
    assert code == 0, err
    pairs = pair_with_expected(env.events, failed)  # exactly the failed ones, by identity and time
    assert_live_send_flags(pairs)
    assert_names_as_in_quota_db(env.events, E7)
    # the two timeouts are flagged uncertain in the preview too
    code, out, err = run(capsys, "--utc", "--only-failed", "--dry-run", src)
    rows = [line for line in out.splitlines()[1:]]
    assert len(rows) == 55
    assert sum(" uncertain " in r for r in rows) == 2


def test_9c7664e_raw_subkeys_are_hashed_186_and_34(env, capsys):
    src = FIXTURES / A9 / "journal.short.txt.gz"
    code, out, err = run(capsys, "--utc", src)
    assert code == 0, err
    assert len(env.events) == 186
    assert_matches_expected(env.events, A9)
    forms = set(fixture(A9)["subkey_sha256_16"].values()) if "subkey_sha256_16" in fixture(A9) else None
    from oai_to_circuit.events import hash_subkey

    raw_to_hash = {raw: hash_subkey(raw) for raw in fixture(A9)["subkeys"].values()}
    if forms:
        assert set(raw_to_hash.values()) <= forms
    assert {b["event"]["subkey"] for b in env.events} <= set(raw_to_hash.values())
    assert not any(b["event"]["subkey"] in raw_to_hash for b in env.events)  # no raw key leaves the host
    assert err.count("no subkey_names table") == 1  # names: one warning (in the report), then carry on
    assert_live_send_flags(assert_matches_expected(env.events, A9))
    # --only-failed (another ledger, so nothing counts as already sent): exactly the 34 failed, by identity
    # and time, the one timeout (era A logs it without any identity) uncertain
    _, failed = expected(A9)
    assert Counter(live_outcome(d) for d in failed) == {"failed": 33, "uncertain": 1}
    bodies, err = send(env, capsys, src, "--only-failed")
    assert_live_send_flags(pair_with_expected(bodies, failed))
    assert {b["event"]["subkey"] for b in bodies} <= set(raw_to_hash.values())


def test_dry_run_ndjson_prints_exactly_what_a_real_run_sends(env, capsys):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    code, out, err = run(capsys, "--utc", "--dry-run", "--output", "ndjson", "--db", db_path(E7), src)
    assert code == 0 and env.requests == []
    preview = [json.loads(line) for line in out.splitlines()]
    code, _, err = run(capsys, "--utc", "--db", db_path(E7), src)
    assert code == 0, err
    assert sorted(preview, key=lambda b: b["event"]["backfill_id"]) == \
        sorted(env.events, key=lambda b: b["event"]["backfill_id"])


def test_second_run_sends_nothing_and_says_319_already_sent(env, capsys):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    assert run(capsys, "--utc", src)[0] == 0
    n_requests = len(env.requests)
    code, out, err = run(capsys, "--utc", src)
    assert code == 0
    assert len(env.events) == 319
    assert len(env.requests) == n_requests
    assert "319 already sent by an earlier run" in err
    code, out, err = run(capsys, "--utc", "--force", src)
    assert code == 0 and len(env.events) == 638


def test_overlapping_inputs_in_one_run_send_each_event_once(env, capsys):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    code, out, err = run(capsys, "--utc", src, src)
    assert code == 0, err
    assert len(env.events) == 319
    assert "319 events appeared more than once" in err


def line_accounting(err):
    """The report's line accounting: (lines read, usage-related, {skip reason: n}); a reason is named by its
    words before any '(...)' explanation ('not usage-related', 'journalctl marker lines', ...)."""
    read = int(re.search(r"^read:\s+(\d+) lines from", err, re.M).group(1))
    m = re.search(r"^lines:\s+(\d+) usage-related \(read for events\); skipped: (.*)$", err, re.M)
    assert m, err
    skipped = Counter()
    for part in m.group(2).split("; "):
        n, why = part.split(" ", 1)
        skipped[why.split(" (", 1)[0]] += int(n)
    return read, int(m.group(1)), dict(skipped)


SERVICE = b"Dec 03 18:23:31 proxy-01 oai-to-circuit[7245]: "


def write_junk(path):
    """Seeded random bytes, invalid UTF-8, NULs, 1 MB lines, journalctl markers, a blob line, a last line
    without its newline. Returns what the report must count: (lines, usage-related, skipped by reason)."""
    rnd = random.Random(7)
    with open(path, "wb") as fh:
        fh.write(b"-- Logs begin at Thu 2026-12-03 18:23:00 UTC, end at Thu 2026-12-03 18:30:00 UTC. --\n")
        for i in range(300):  # none mentions the HEC client or starts like a marker or JSON line
            while True:
                line = rnd.randbytes(rnd.randrange(1, 400)).replace(b"\n", b"")
                low = line.lower()
                if line and line[:1] not in b"-[{" and b"hec" not in low and b"streaming" not in low \
                        and b"blob" not in low:
                    break
            fh.write(line + b"\n")
            if i == 150:
                fh.write(b"-- Boot 5d1d8a2ce7db788bc055be299b0f4f87 --\n")
        fh.write(SERVICE + b"INFO:     2026-12-03 18:23:31,278 - SpawnProcess-1[ 7249] - uvicorn.access - "
                 b'10.0.0.1:5 - "POST /v1/chat/completions HTTP/1.1" 200\n')
        fh.write(b"\xff\xfe invalid utf-8 \xc3\x28 splunk_hec \x80\x00\n")  # names the HEC client: read
        fh.write(SERVICE + b"x" * 1_000_000 + b"\n")
        fh.write(SERVICE + b"\xc3" * 500_000 + b" oai_to_circuit.splunk_hec " + b"\xa0" * 500_000 + b"\n")  # read
        fh.write(b'{"MESSAGE": [1, 2, 300], "__REALTIME_TIMESTAMP": "x"}\n')
        fh.write(SERVICE + b"[123B blob data]\n")
        fh.write(b"-- Reboot --\n")
        fh.write(b"\x00\x01\x02 no newline at the end")
    return 310, 2, {"not usage-related": 300 + 4, "journalctl marker lines": 3, "[NNNB blob data] lines": 1}


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_junk_input_never_crashes_and_every_line_is_counted_once(env, capsys, tmp_path, monkeypatch, how):
    import io

    junk = tmp_path / "junk.txt"
    lines, usage, skipped = write_junk(junk)
    if how == "stdin":
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(junk.read_bytes())))
    code, out, err = run(capsys, "--utc", "--dry-run", junk if how == "file" else "-")
    assert code == 0, err
    assert "Traceback" not in err
    assert "(no events selected)" in out
    assert "1 lines were stored as binary" in err
    assert line_accounting(err) == (lines, usage, skipped)
    assert usage + sum(skipped.values()) == lines


# The extractor's own skips ("HEC lines in an unrecognised shape", "outcome lines whose event is not in the
# input", "payload blocks cut off ...") are among the usage-related lines: the report lists them on a line of
# their own ("ignored:"), so the figures of the "lines:" line add up to the lines read.
@pytest.mark.parametrize("case", ["extract-begins-mid-event", "garbled-hec-lines"])
def test_line_accounting_adds_up_when_the_extractor_skips_lines(env, capsys, tmp_path, case):
    import gzip

    src = tmp_path / f"{case}.txt"
    if case == "extract-begins-mid-event":  # real journal from line 9000: its first outcome line has no event
        lines = gzip.decompress((FIXTURES / E7 / "journal.short.txt.gz").read_bytes()).split(b"\n")
        src.write_bytes(b"\n".join(lines[8999:]))
    else:
        app = SERVICE + b"INFO:     2026-12-03 18:23:31,278 - SpawnProcess-1[ 7249] - oai_to_circuit.splunk_hec - "
        src.write_bytes(b"".join([
            b"not the service\n",
            app + b"[HEC EXPORT] garbage here\n",
            app + "[HEC EXPORT] ✓ SUCCESS: subkey=sha256:0396fdc82504f0cc, model=gpt-4o\n".encode(),
            app + b"[HEC EXPORT] Full HEC payload: {\n",
            SERVICE + b'  "time": 1796322212.3,\n',
            SERVICE + b'  "event": {\n',
        ]))
    code, out, err = run(capsys, "--utc", "--dry-run", src)
    assert code == 0, err
    read, usage, skipped = line_accounting(err)
    assert read == sum(1 for _ in open(src, "rb"))
    assert usage + sum(skipped.values()) == read, err.splitlines()[2]
    ignored = re.search(r"^ignored:\s+(.*)$", err, re.M).group(1)
    assert ignored == {"extract-begins-mid-event": "1 outcome lines whose event is not in the input (extract began"
                       " mid-event, or an error event era A never logged)",
                       "garbled-hec-lines": "1 HEC lines in an unrecognised shape; 1 outcome lines whose event is"
                       " not in the input (extract began mid-event, or an error event era A never logged); 1 payload"
                       " blocks cut off at the end of the input"}[case]


def test_missing_hec_url_is_one_clear_line_and_exit_2(env, capsys, monkeypatch):
    monkeypatch.delenv("SPLUNK_HEC_URL")
    code, out, err = run(capsys, "--utc", FIXTURES / E7 / "journal.short.txt.gz")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "SPLUNK_HEC_URL" in err and "credentials.env" in err
    assert env.requests == []


def test_dry_run_needs_no_hec_settings(env, capsys, monkeypatch):
    monkeypatch.delenv("SPLUNK_HEC_URL")
    monkeypatch.delenv("SPLUNK_HEC_TOKEN")
    code, out, err = run(capsys, "--utc", "--dry-run", "--db", db_path(E7), FIXTURES / E7 / "journal.short.txt.gz")
    assert code == 0
    assert len(out.splitlines()) == 320  # header + 319 rows
    assert "would send" in err


def test_reason_index_sourcetype_and_errors(env, capsys):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    code, out, err = run(capsys, "--utc", "--include-errors", "--reason", "names added", "--index", "llm_backfill",
                         "--sourcetype", "llm:usage:v2", src)
    assert code == 0, err
    st = Counter(b["sourcetype"] for b in env.events)
    assert st == {"llm:usage:v2": 319, "llm:usage:v2:error": 50}
    assert {b["index"] for b in env.events} == {"llm_backfill"}
    assert {b["event"]["backfill_reason"] for b in env.events} == {"names added"}
    errs = [b["event"] for b in env.events if b["sourcetype"].endswith(":error")]
    assert Counter(e["error_type"] for e in errs) == Counter(
        d["payload"]["event"]["error_type"] for d in sum(expected(E7, "error"), []))


def test_since_until_select_by_original_time(env, capsys):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    code, out, err = run(capsys, "--utc", "--dry-run", "--output", "ndjson", "--since", "2026-12-03 18:23:56",
                         "--until", "2026-12-03 18:24:30", src)
    assert code == 0, err
    bodies = [json.loads(x) for x in out.splitlines()]
    debug_run = [d for d in sum(expected(E7), []) if d["run"] == "head-e749b02-debug"]
    assert len(bodies) == len(debug_run) == 156


def test_hec_failure_goes_to_dead_letters_and_replays(env, capsys, tmp_path):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    env.reject_event_at(3)
    code, out, err = run(capsys, "--utc", "--batch-size", "50", src)
    assert code == 1
    dead = list(tmp_path.glob("backfill-dead-letters-*.ndjson"))
    assert len(dead) == 1
    assert oct(os.stat(dead[0]).st_mode & 0o777) == "0o600"
    lines = [json.loads(x) for x in dead[0].read_text().splitlines()]
    assert len(lines) == 1 and "Invalid data format" in lines[0]["reason"]
    assert len(env.events) == 318
    code, out, err = run(capsys, "--replay", dead[0])
    assert code == 0, err
    assert len(env.events) == 319
    assert len({b["event"]["backfill_id"] for b in env.events}) == 319


def test_rejected_token_stops_at_once_and_loses_nothing(env, capsys, monkeypatch, tmp_path):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", "22222222-0000-4000-8000-000000000000")
    code, out, err = run(capsys, "--utc", src)
    assert code == 2
    assert "token is not valid" in err and "22222222-0000-4000-8000-000000000000" not in out + err
    assert env.events == []
    (dead,) = tmp_path.glob("backfill-dead-letters-*.ndjson")
    assert len(dead.read_text().splitlines()) == 319
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", TOKEN)
    code, out, err = run(capsys, "--replay", dead)
    assert code == 0, err
    assert len(env.events) == 319 and len({b["event"]["backfill_id"] for b in env.events}) == 319


def test_token_never_printed_or_written_in_any_mode(env, capsys, tmp_path, monkeypatch):
    """Every mode, verbose, success and failure: the token is in no output and no file."""
    src = FIXTURES / E7 / "journal.short.txt.gz"
    seen = []
    for args in (["--dry-run", "--verbose"], ["--dry-run", "--output", "ndjson"], ["--verbose", "--include-errors"],
                 ["--check"], ["--verbose", "--force", "--only-failed"]):
        code, out, err = run(capsys, "--utc", *args, src)
        seen.append(out + err)
    env.fail_next(1, status=403, code=4, text="Invalid token")
    seen.append("".join(run(capsys, "--utc", "--force", "--verbose", src)[1:]))
    monkeypatch.setenv("SPLUNK_HEC_URL", "http://127.0.0.1:1")  # nothing listens: connection refused
    seen.append("".join(run(capsys, "--utc", "--force", "--retry-for", "0", "--verbose", src)[1:]))
    assert all(TOKEN not in s for s in seen)
    assert any("dead letters" in s for s in seen)
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f


def test_guide_scenario_3_migrate_add_names_then_backfill(env, capsys, tmp_path):
    """Scenario 3: an old database (no subkey_names) is migrated, names added, the backfill carries them."""
    import shutil

    import add_subkey_names_table

    db = tmp_path / "quota.db"
    shutil.copy(db_path(A9), db)
    db.chmod(0o644)
    usage_before = sqlite3.connect(db).execute("SELECT * FROM usage ORDER BY subkey, model").fetchall()
    assert add_subkey_names_table.main(["--migrate", "--db", str(db)]) == 0
    f = fixture(E7)  # the same subkeys; the 9c7664e fixture has no names of its own
    for who, (name, email, desc) in f["names"].items():
        argv = ["--add", "--db", str(db), "--subkey", f["subkeys"][who], "--name", name, "--description", desc]
        if email:
            argv += ["--email", email]
        assert add_subkey_names_table.main(argv) == 0
    capsys.readouterr()
    assert sqlite3.connect(db).execute("SELECT * FROM usage ORDER BY subkey, model").fetchall() == usage_before

    code, out, err = run(capsys, "--utc", "--db", db, FIXTURES / A9 / "journal.short.txt.gz")
    assert code == 0, err
    assert len(env.events) == 186
    from oai_to_circuit.events import hash_subkey

    want = {hash_subkey(f["subkeys"][who]): (n, e or None) for who, (n, e, _) in f["names"].items()}
    named = [b["event"] for b in env.events if b["event"]["subkey"] in want]
    assert named and all((e["friendly_name"], e.get("email")) == want[e["subkey"]] for e in named)
    assert sum("friendly_name" in b["event"] for b in env.events) == len(named)
    assert f"friendly_name joined on {len(named)} of 186 events (" in err


def test_busy_hec_is_retried_and_every_event_lands_once(env, capsys):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    env.fail_next(2, status=503, code=9, text="Server is busy", retry_after=0)
    code, out, err = run(capsys, "--utc", "--batch-size", "100", src)
    assert code == 0, err
    assert Counter(Counter(b["event"]["backfill_id"] for b in env.events).values()) == {1: 319}
    assert [r["status"] for r in env.requests[:3]] == [503, 503, 200]


def test_ambiguous_timeout_is_resent_and_reported_as_possible_double(env, capsys):
    src = FIXTURES / E7 / "journal.short.txt.gz"
    env.delay_next(2.5)  # HEC stores the first batch, then answers after the client gave up
    code, out, err = run(capsys, "--utc", "--batch-size", "100", "--timeout", "1", src)
    assert code == 0, err
    counts = Counter(b["event"]["backfill_id"] for b in env.events)
    assert len(counts) == 319
    doubled = sorted(i for i, n in counts.items() if n == 2)
    assert len(doubled) == 100 and max(counts.values()) == 2
    assert "100 events were resent after an ambiguous send" in err
    (listing,) = Path.cwd().glob("backfill-maybe-doubled-*.txt")  # env: cwd is the test's tmp_path
    assert f"the backfill_id of each of those 100 is in {listing}" in err
    assert sorted(listing.read_text().split()) == doubled  # every double named, nothing else
    assert "| dedup backfill_id" in err
    assert "| stats count by backfill_id | where count > 1" in err


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0", "x"], "argument --batch-size: 0 must be at least 1"),
    (["--timeout", "-1", "x"], "argument --timeout: -1 must be more than 0"),
    (["--max-eps", "fast", "x"], "argument --max-eps: 'fast' is not a number"),
])
def test_bad_flags_are_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        backfill_hec.main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"backfill_hec.py: error: {message} (see backfill_hec.py --help)\n"


def test_exactly_once_per_index_whatever_the_url_and_a_trial_run_is_named(env, capsys, monkeypatch):
    from hec_server import HECServer

    src = FIXTURES / E7 / "journal.short.txt.gz"
    assert run(capsys, "--utc", src)[0] == 0
    port = env.url.rsplit(":", 1)[1]
    # the same Splunk written differently, or with a failover node added: nothing is sent again
    for url in (f"http://localhost:{port}/services/collector", f"http://127.0.0.1:1,{env.url}"):
        monkeypatch.setenv("SPLUNK_HEC_URL", url)
        code, out, err = run(capsys, "--utc", "--retry-for", "0", src)
        assert code == 0 and "319 already sent by an earlier run" in err
    assert len(env.events) == 319
    # another Splunk: the report says where they went, and --force sends them there too
    with HECServer(token=TOKEN) as production:
        monkeypatch.setenv("SPLUNK_HEC_URL", production.url)
        code, out, err = run(capsys, "--utc", src)
        assert code == 0 and production.events == []
        assert f"of the events already sent, 319 to 127.0.0.1:{port}: not the collector(s) this run uses" in err
        code, out, err = run(capsys, "--utc", "--force", src)
        assert code == 0 and len(production.events) == 319


def test_replay_goes_to_the_index_the_settings_name_now(capsys, tmp_path, monkeypatch):
    from hec_server import HECServer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", TOKEN)
    with HECServer(token=TOKEN, indexes={"oai_circuit"}) as hec:
        monkeypatch.setenv("SPLUNK_HEC_URL", hec.url)
        code, out, err = run(capsys, "--utc", "--index", "oai_circut", FIXTURES / E7 / "journal.short.txt.gz")
        assert code == 2 and "oai_circut" in err and hec.events == []
        (dead,) = tmp_path.glob("backfill-dead-letters-*.ndjson")
        code, out, err = run(capsys, "--replay", dead)
        assert code == 0, err
        assert len(hec.events) == 319 and {b["index"] for b in hec.events} == {"oai_circuit"}
        assert "usage replayed (dead letters or an ndjson preview): 319" in err


def test_a_journal_printed_in_another_zone_is_corrected_by_the_services_own_clock(env, capsys, tmp_path):
    """Printed in New York, read as UTC: events with their own logged time show the 5 h, and fix the rest."""
    ny = journalctl_view(E7, "short", tmp_path, tz="America/New_York")
    code, out, err = run(capsys, "--utc", "--dry-run", "--output", "ndjson", ny)
    assert code == 0
    assert "the journal text was printed in a zone +5 h from the one assumed (UTC): 208 events" in err
    assert "The times of 161 events rebuilt from summary lines were corrected" in err  # 140 usage + 21 error
    assert "WARNING" not in err
    guessed = sorted((b["event"]["backfill_id"], b["time"], b["event"]["timestamp"]) for b in map(json.loads, out.splitlines()))
    code, out, err = run(capsys, "--tz", "America/New_York", "--dry-run", "--output", "ndjson", ny)
    told = sorted((b["event"]["backfill_id"], b["time"], b["event"]["timestamp"]) for b in map(json.loads, out.splitlines()))
    assert "printed in a zone" not in err
    assert guessed == told and len(told) == 319


def test_the_report_says_what_live_already_delivered_and_what_is_not_a_journal(env, capsys):
    code, out, err = run(capsys, "--utc", "--dry-run", FIXTURES / E7 / "journal.short.txt.gz")
    assert "note:      264 of the events to send already reached Splunk live" in err
    assert "note:      2 of the events to send timed out live" in err
    code, out, err = run(capsys, "--utc", "--dry-run", db_path(E7))
    assert code == 0 and "WARNING:   no line of the service was recognised" in err


def test_a_missing_input_stops_before_anything_is_sent(env, capsys, tmp_path):
    code, out, err = run(capsys, "--utc", FIXTURES / E7 / "journal.short.txt.gz", tmp_path / "nosuch.txt")
    assert code == 2 and err.strip().endswith("nosuch.txt: no such file")
    assert env.requests == [] and not list(tmp_path.glob("backfill-dead-letters-*"))


def test_replay_of_a_file_that_is_no_dead_letter_is_refused(env, capsys):
    code, out, err = run(capsys, "--replay", FIXTURES / E7 / "journal.short.txt.gz")
    assert code == 2 and "no line is a dead letter or an HEC event" in err and env.requests == []


def test_a_gzip_cut_short_stops_the_run_with_what_was_delivered_in_the_report(env, capsys, tmp_path):
    import gzip

    whole = gzip.compress(gzip.decompress((FIXTURES / E7 / "journal.short.txt.gz").read_bytes()))
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(whole[: len(whole) * 3 // 4])
    code, out, err = run(capsys, "--utc", "--batch-size", "20", cut)
    assert code == 2
    assert "STOPPED:   " in err and "gzip data is truncated or corrupt" in err
    delivered = int(err.split("delivered: ")[1].split()[0])
    assert delivered == len(env.events)
