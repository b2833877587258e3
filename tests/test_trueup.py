"""trueup_hec.py end to end: the guide's January 2026 true-up against a real HEC server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest

import trueup_hec
from oai_to_circuit.events import encode

TOKEN = "11111111-2222-4333-8444-555555555555"
FIX = Path(__file__).parent / "fixtures" / "trueup"
REF = FIX / "reference-2026-01.csv"
REF_JSON = FIX / "reference-2026-01.json"
SPLUNK = FIX / "splunk-2026-01.csv"
SPLUNK_CORRECTED = FIX / "splunk-2026-01-corrected.csv"

# The one correction of the guide's example, exactly as it must reach HEC (compact JSON, this key order).
SUBKEY_HASH = "sha256:" + hashlib.sha256(b"backfill-trueup").hexdigest()[:16]
MINI_ID = hashlib.sha256(f"trueup|2026-01|{SUBKEY_HASH}|gpt-4o-mini|3683|3543|140".encode()).hexdigest()[:32]
EXPECTED_BYTES = (
    b'{"time":1768435200.0,"source":"oai-to-circuit","sourcetype":"llm:usage","index":"oai_circuit",'
    b'"event":{"subkey":"sha256:a021e16cd855dc17","model":"gpt-4o-mini","requests":0,"prompt_tokens":3543,'
    b'"completion_tokens":140,"total_tokens":3683,"timestamp":"2026-01-15T00:00:00Z","backfill":true,'
    b'"trueup":true,"backfill_reason":"true-up to provider usage report",'
    b'"backfill_id":"d160291dd633ae03fb5c9ec39d1826ed","trueup_month":"2026-01"}}'
)


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def env(tmp_path, monkeypatch, hec_server):
    """HEC settings in the environment; cwd, ledger and an empty credentials.env in tmp; stdin not a TTY."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "credentials.env").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("SPLUNK_HEC_URL", hec_server.url + "/services/collector/event")
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", TOKEN)
    for name in ("QUOTA_DB_PATH", "SPLUNK_INDEX", "SPLUNK_SOURCETYPE", "SPLUNK_SOURCE", "BACKFILL_SUBKEY",
                 "SPLUNK_VERIFY_SSL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return hec_server


def run(capsys, *argv):
    code = trueup_hec.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    return code, out, err


def event_posts(server):
    return [r for r in server.requests if r["path"] == "/services/collector/event"]


def table_row(out, model):
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == [model]]
    assert len(rows) == 1, out
    return rows[0]


def test_expected_bytes_follow_the_documented_derivation():
    assert SUBKEY_HASH == "sha256:a021e16cd855dc17"
    assert MINI_ID == "d160291dd633ae03fb5c9ec39d1826ed"


def test_guide_january_2026_sends_exactly_the_gpt_4o_mini_correction(env, capsys):
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--yes", "--no-gzip")
    assert code == 0, err

    # exactly one event reached HEC, in one POST, and it is byte for byte the expected body
    assert len(env.events) == 1
    posts = event_posts(env)
    assert len(posts) == 1 and posts[0]["status"] == 200 and posts[0]["gzip"] is False
    assert posts[0]["bytes"] == len(EXPECTED_BYTES)
    received = env.events[0]
    assert encode(received) == EXPECTED_BYTES
    assert received == {
        "time": 1768435200.0, "source": "oai-to-circuit", "sourcetype": "llm:usage", "index": "oai_circuit",
        "event": {"subkey": "sha256:a021e16cd855dc17", "model": "gpt-4o-mini", "requests": 0,
                  "prompt_tokens": 3543, "completion_tokens": 140, "total_tokens": 3683,
                  "timestamp": "2026-01-15T00:00:00Z", "backfill": True, "trueup": True,
                  "backfill_reason": "true-up to provider usage report",
                  "backfill_id": "d160291dd633ae03fb5c9ec39d1826ed", "trueup_month": "2026-01"}}

    # the side-by-side table: reference, current (Splunk), adjustment, status
    assert table_row(out, "gpt-4o-mini") == ["gpt-4o-mini", "2026-01", "prem_tier", "3,683", "3,543", "140",
                                             "0", "0", "0", "3,683", "3,543", "140", "send"]
    assert table_row(out, "gpt-4o") == ["gpt-4o", "2026-01", "prem_tier", "37,467", "33,019", "4,448",
                                        "37,467", "33,019", "4,448", "-", "-", "-", "ok:", "equal"]
    assert table_row(out, "gpt-5-nano") == ["gpt-5-nano", "2026-01", "prem_tier", "13,871", "8,939", "4,932",
                                            "21,701", "15,522", "6,179", "-", "-", "-", "ok:", "current", "higher"]
    # gpt-5: its prompt is short (853 < 900) but its total is higher: no correction
    assert table_row(out, "gpt-5") == ["gpt-5", "2026-01", "prem_tier", "21,617", "900", "20,717",
                                       "21,874", "853", "21,021", "-", "-", "-", "ok:", "current", "higher"]
    assert "delivered 1, failed 0" in err
    assert "trueup=true" in err  # the verification search


def test_second_run_with_the_corrected_export_sends_nothing(env, capsys):
    code, _, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--yes")
    assert code == 0, err
    assert len(env.events) == 1
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK_CORRECTED, "--yes")
    assert code == 0, err
    assert "no corrections needed" in err
    assert table_row(out, "gpt-4o-mini")[-2:] == ["ok:", "equal"]
    assert len(env.events) == 1 and len(event_posts(env)) == 1


def test_rerunning_the_first_inputs_sends_nothing_the_ledger_has_it(env, capsys):
    code, _, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--yes")
    assert code == 0, err
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--yes")
    assert code == 0, err
    assert "already sent by an earlier run" in err
    assert table_row(out, "gpt-4o-mini")[-2:] == ["already", "sent"]
    assert len(env.events) == 1 and len(event_posts(env)) == 1
    # the JSON reference is the same report: the same correction id, so the ledger stops it too
    code, out, err = run(capsys, "--reference", REF_JSON, "--splunk", SPLUNK, "--yes")
    assert code == 0, err
    assert len(event_posts(env)) == 1


def test_a_later_different_shortfall_gets_a_new_id(env, capsys, tmp_path):
    run(capsys, "--reference", REF, "--splunk", SPLUNK, "--yes")
    revised = tmp_path / "reference-revised.csv"
    revised.write_text(REF.read_text().replace('"3,683","3,543",140', '"3,800","3,650",150'))
    code, out, err = run(capsys, "--reference", revised, "--splunk", SPLUNK_CORRECTED, "--yes")
    assert code == 0, err
    assert len(env.events) == 2
    ev = env.events[1]["event"]
    assert (ev["total_tokens"], ev["prompt_tokens"], ev["completion_tokens"], ev["requests"]) == (117, 107, 10, 0)
    assert ev["backfill_id"] != MINI_ID


def test_dry_run_sends_nothing_and_shows_the_exact_body(env, capsys):
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--dry-run")
    assert code == 0, err
    assert env.requests == []
    assert EXPECTED_BYTES.decode() in out.splitlines()
    assert table_row(out, "gpt-4o-mini")[-2:] == ["would", "send"]
    assert "nothing sent" in err
    # and it recorded nothing: the real run still sends it
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--yes")
    assert code == 0, err
    assert len(env.events) == 1


def test_no_terminal_and_no_yes_refuses_with_exit_2(env, capsys):
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK)
    assert code == 2
    assert env.requests == []
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "not a terminal" in lines[0] and "--yes" in lines[0]


def test_terminal_asks_and_sends_only_on_y(env, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", FakeTTY("n\n"))
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK)
    assert code == 0
    assert f"Send 1 correction event to oai_circuit at 127.0.0.1:{env.port}? [y/N]" in err
    assert "[y/N]" not in out
    assert env.requests == []
    monkeypatch.setattr("sys.stdin", FakeTTY("y\n"))
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK)
    assert code == 0, err
    assert len(env.events) == 1 and env.events[0]["event"]["backfill_id"] == MINI_ID


def test_from_db_sums_monthly_usage_over_subkeys(env, capsys, tmp_path, monkeypatch):
    db = tmp_path / "quota.db"
    con = sqlite3.connect(db)
    con.execute("""CREATE TABLE monthly_usage (subkey TEXT NOT NULL, model TEXT NOT NULL, usage_month TEXT NOT NULL,
                   requests INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,
                   completion_tokens INTEGER NOT NULL DEFAULT 0, total_tokens INTEGER NOT NULL DEFAULT 0,
                   PRIMARY KEY (subkey, model, usage_month))""")
    rows = [  # the guide's Splunk figures, split over two subkeys; another month that must not count
        ("team_a", "gpt-4o", "2026-01", 10, 20000, 2000, 22000), ("team_b", "gpt-4o", "2026-01", 9, 13019, 2448, 15467),
        ("team_a", "gpt-5-nano", "2026-01", 5, 15522, 6179, 21701),
        ("team_a", "gpt-5", "2026-01", 3, 800, 21000, 21800), ("team_b", "gpt-5", "2026-01", 1, 53, 21, 74),
        ("team_a", "gpt-4o-mini", "2025-12", 7, 99999, 1, 100000),
    ]
    con.executemany("INSERT INTO monthly_usage VALUES (?,?,?,?,?,?,?)", rows)
    con.commit()
    con.close()
    before = db.read_bytes()
    code, out, err = run(capsys, "--reference", REF, "--from-db", "--db", db, "--yes", "--no-gzip")
    assert code == 0, err
    assert len(env.events) == 1 and encode(env.events[0]) == EXPECTED_BYTES
    assert table_row(out, "gpt-4o")[6:9] == ["37,467", "33,019", "4,448"]
    assert table_row(out, "gpt-5")[6:9] == ["21,874", "853", "21,021"]
    assert db.read_bytes() == before  # opened read-only
    assert sorted(p.name for p in tmp_path.glob("quota.db*")) == ["quota.db"]
    # QUOTA_DB_PATH is the default database
    monkeypatch.setenv("QUOTA_DB_PATH", str(db))
    code, out, err = run(capsys, "--reference", REF, "--from-db", "--dry-run")
    assert code == 0, err
    assert table_row(out, "gpt-4o-mini")[-2:] == ["already", "sent"]


@pytest.mark.parametrize("value, why", [("-140", "is negative"), ("abc", "is not a whole number"),
                                        ("1.5", "is not a whole number"), ("1,40", "is not a whole number")])
def test_a_bad_number_is_one_line_naming_file_row_and_column(env, capsys, tmp_path, value, why):
    bad = tmp_path / "bad.csv"
    bad.write_text(REF.read_text().replace('"3,543",140', f'"3,543","{value}"'))
    code, out, err = run(capsys, "--reference", bad, "--splunk", SPLUNK, "--yes")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("trueup_hec.py: error: ")
    assert f'{bad} row 2 column "Completion Tokens"' in lines[0] and why in lines[0]
    assert out == "" and env.requests == []


def test_an_unquoted_thousands_separator_is_caught(env, capsys, tmp_path):
    bad = tmp_path / "unquoted.csv"
    bad.write_text(REF.read_text().replace('"37,467","33,019","4,448"', "37,467,33,019,4,448"))
    code, out, err = run(capsys, "--reference", bad, "--splunk", SPLUNK, "--dry-run")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{bad} row 3: 9 fields but the header has 6" in err


def test_blank_is_zero_and_a_zero_row_equals_a_missing_row(env, capsys, tmp_path):
    zero = tmp_path / "splunk-zero.csv"
    zero.write_text(SPLUNK.read_text() + '"gpt-4o-mini","2026-01","prem_tier","0","",""\n')
    code, out, err = run(capsys, "--reference", REF_JSON, "--splunk", zero, "--dry-run")
    assert code == 0, err
    assert EXPECTED_BYTES.decode() in out.splitlines()


def test_json_output_for_scripts(env, capsys):
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--yes", "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["result"]["delivered"] == 1 and doc["result"]["failed"] == 0
    assert [r["model"] for r in doc["rows"] if r["adjustment"]] == ["gpt-4o-mini"]
    mini = next(r for r in doc["rows"] if r["model"] == "gpt-4o-mini")
    assert mini["reference"] == {"total": 3683, "prompt": 3543, "completion": 140}
    assert mini["current"] == {"total": 0, "prompt": 0, "completion": 0}
    assert mini["adjustment"] == mini["reference"] and mini["backfill_id"] == MINI_ID
    assert [encode(b) for b in doc["corrections"]] == [EXPECTED_BYTES]


def test_date_reason_subkey_and_print_spl(env, capsys):
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--dry-run", "--output", "json",
                         "--date", "2026-01-20", "--reason", "Azure invoice Jan 2026", "--subkey",
                         "egai-prd-sales-backfill")
    assert code == 0, err
    body = json.loads(out)["corrections"][0]
    assert body["time"] == 1768867200.0 and body["event"]["timestamp"] == "2026-01-20T00:00:00Z"
    assert body["event"]["backfill_reason"] == "Azure invoice Jan 2026"
    assert body["event"]["subkey"] == "sha256:" + hashlib.sha256(b"egai-prd-sales-backfill").hexdigest()[:16]
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--dry-run", "--date", "2026-02-01")
    assert code == 2 and "not in 2026-01" in err
    code, out, err = run(capsys, "--print-spl", "--month", "2026-01")
    assert code == 0
    assert "earliest=1767225600 latest=1769904000" in out  # 2026-01-01 and 2026-02-01, 00:00 UTC
    assert "NOT (backfill=true backfill_live_send=delivered)" in out
    assert out.startswith('index=oai_circuit sourcetype="llm:usage"')


def test_an_export_that_misses_the_month_is_refused(env, capsys, tmp_path):
    feb = tmp_path / "splunk-feb.csv"
    feb.write_text(SPLUNK.read_text().replace("2026-01-01", "2026-02-01"))
    code, out, err = run(capsys, "--reference", REF, "--splunk", feb, "--yes")
    assert code == 2 and "no rows for 2026-01" in err and len(err.strip().splitlines()) == 1
    assert env.requests == []


def test_missing_hec_settings_is_exit_2_after_the_table(env, capsys, monkeypatch):
    monkeypatch.delenv("SPLUNK_HEC_TOKEN")
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--yes")
    assert code == 2 and "SPLUNK_HEC_TOKEN is not set" in err
    assert env.requests == []


def test_a_failed_correction_is_dead_lettered_exit_1_and_sent_by_the_next_run(env, capsys, tmp_path):
    env.fail_next(5, 503, 9, "Server is busy")
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--yes", "--retry-for", "0")
    assert code == 1, err
    assert env.events == []
    assert "dead letters: 1" in err
    dead = list(tmp_path.glob("backfill-dead-letters-*.ndjson"))
    assert len(dead) == 1
    assert json.loads(dead[0].read_text())["backfill_id"] == MINI_ID
    env._faults.clear()
    code, out, err = run(capsys, "--reference", REF, "--splunk", SPLUNK, "--yes", "--no-gzip")
    assert code == 0, err
    assert [encode(b) for b in env.events] == [EXPECTED_BYTES]


def test_sigterm_while_the_correction_is_on_the_wire_finishes_it_and_a_rerun_sends_nothing(hec_server, tmp_path):
    """Like the backfill: the first SIGTERM lets the POST be answered, so the correction is delivered once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from journal_views import TOKEN

    env = dict(os.environ, SPLUNK_HEC_URL=hec_server.url, SPLUNK_HEC_TOKEN=TOKEN, XDG_STATE_HOME=str(tmp_path))
    cmd = [sys.executable, str(Path(__file__).resolve().parent.parent / "trueup_hec.py"), "--reference", str(REF),
           "--splunk", str(SPLUNK), "--yes"]
    hec_server.delay_next(2)  # stores the correction, answers 2 s later
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not hec_server.events and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "delivered 1, failed 0" in err and not list(tmp_path.glob("backfill-dead-letters-*"))
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert [e["event"]["total_tokens"] for e in hec_server.events] == [3683]  # once
