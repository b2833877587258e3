"""What an operator gets wrong, and what the tools then say: one line, the right exit status, nothing lost."""
from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter

import pytest

import backfill_hec
from journal_views import FIXTURES, TOKEN

E7 = "service-e749b02"

HEAD = ("Dec 03 18:26:06 proxy-01 oai-to-circuit[7724]: INFO:     2026-12-03 18:26:06,830 - SpawnProcess-1[ 7728]"
        " - oai_to_circuit.splunk_hec - [HEC EXPORT] ")
CONT = "Dec 03 18:26:06 proxy-01 oai-to-circuit[7724]: "


def run(capsys, *argv):
    code = backfill_hec.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def e7_journal(tmp_path):
    p = tmp_path / "recent_logs.txt"
    with gzip.open(FIXTURES / E7 / "journal.short.txt.gz") as src, open(p, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return p


def test_a_mistyped_db_stops_the_run_before_anything_is_sent(env, tmp_path, capsys, monkeypatch):
    """Sent without names, the events could not be sent again with them: the ledger has them."""
    typo = tmp_path / "qouta.db"
    code, out, err = run(capsys, "--utc", "--db", typo, e7_journal(tmp_path))
    assert code == 2
    assert err == (f"backfill_hec.py: error: --db: no database at {typo}; fix it, or give --no-names to send"
                   " without friendly_name/email\n")
    assert env.events == [] and env.requests == []
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    code, out, err = run(capsys, "--utc", "--dry-run", "--db", junk, e7_journal(tmp_path))
    assert (code, err) == (2, f"backfill_hec.py: error: --db: {junk} is not a SQLite database; fix it, or give"
                              " --no-names to send without friendly_name/email\n")
    monkeypatch.setenv("QUOTA_DB_PATH", str(typo))  # the same slip in the environment or credentials.env
    code, out, err = run(capsys, "--utc", e7_journal(tmp_path))
    assert (code, err) == (2, f"backfill_hec.py: error: QUOTA_DB_PATH: no database at {typo}; fix it, or give"
                              " --no-names to send without friendly_name/email\n")
    assert env.events == [] and env.requests == []
    code, out, err = run(capsys, "--utc", "--no-names", e7_journal(tmp_path))
    assert code == 0, err
    assert len(env.events) == 319
    assert "names:     --no-names: no database read; events keep only the names the service itself logged" in err


def test_a_db_without_the_names_table_is_a_warning_and_the_run_goes_on(env, tmp_path, capsys):
    db = tmp_path / "old.db"
    shutil.copyfile(FIXTURES / "quota-9c7664e.db", db)
    code, out, err = run(capsys, "--utc", "--db", db, e7_journal(tmp_path))
    assert code == 0, err
    assert len(env.events) == 319
    assert err.count("no subkey_names table") == 1  # said once, in the report


def test_empty_input_is_one_line_and_exit_2(env, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "recent_logs.txt"
    empty.write_bytes(b"")
    code, out, err = run(capsys, empty)
    assert code == 2
    assert err.startswith("warning: SPLUNK_HEC_URL is plain http")  # the only other line
    assert err.split("\n", 1)[1] == ("backfill_hec.py: error: the input is empty (0 lines): nothing to backfill; did the journalctl"
                   " command fail (it needs sudo, or membership of group systemd-journal)?\n")
    assert env.requests == []


def test_no_entries_says_so_instead_of_doubting_the_input(env, tmp_path, capsys):
    f = tmp_path / "jan.txt"
    f.write_text("-- No entries --\n")
    code, out, err = run(capsys, "--dry-run", f)
    assert code == 0
    assert "journalctl printed '-- No entries --'" in err
    assert "no line of the service was recognised" not in err


def test_conflicting_zone_and_year_flags_are_refused(env, tmp_path, capsys):
    j = e7_journal(tmp_path)
    code, out, err = run(capsys, "--dry-run", "--utc", "--tz", "America/New_York", j)
    assert (code, err) == (2, "backfill_hec.py: error: --utc and --tz America/New_York name different zones:"
                              " give one of them\n")
    code, out, err = run(capsys, "--dry-run", "--date", "2026-12-03", "--year", "2025", j)
    assert (code, err) == (2, "backfill_hec.py: error: --date 2026-12-03 and --year 2025 name different years:"
                              " give one of them\n")
    code, out, err = run(capsys, "--dry-run", "--utc", "--tz", "UTC", "--date", "2026-12-03", "--year", "2026", j)
    assert code == 0, err


def test_odd_values_in_a_logged_payload_never_crash_the_report(env, tmp_path, capsys):
    """model null, counts that are not numbers, a non-string subkey, absurd nesting: exit 0, counted."""
    f = tmp_path / "odd.txt"
    deep = "[" * 50_000 + "]" * 50_000
    f.write_text("\n".join([
        HEAD + "Starting Splunk HEC export - subkey=sha256:dba1633cbab71a89, model=gpt-4o, tokens=10 (prompt=5,"
               " completion=5), source=127.0.0.1, url=http://x/services/collector/event",
        HEAD.replace("INFO:    ", "DEBUG:   ") + "Full HEC payload: {",
        CONT + '  "time": 1796322252.992105,',
        CONT + '  "event": {"subkey": 5, "model": null, "prompt_tokens": "n/a", "total_tokens": [1]}',
        CONT + "}",
        HEAD.replace("INFO:    ", "DEBUG:   ") + "Full HEC payload: {",
        CONT + '  "event": ' + deep,
        CONT + "}",
    ]) + "\n")
    code, out, err = run(capsys, "--utc", "--dry-run", "--output", "ndjson", f)
    assert code == 0, err
    bodies = [json.loads(line) for line in out.splitlines()]
    assert [b["event"]["model"] for b in bodies] == [None]
    assert "  (none)               2026-12        1            0            0            0" in err
    assert "1 payload blocks that do not parse as JSON" in err or "1 payload blocks without an event" in err


def test_dead_letter_hint_repeats_the_flags_the_replay_needs(env, tmp_path, capsys):
    env.fail_next(1000, status=403, code=4, text="Invalid authorization")
    ledger = tmp_path / "my ledger.db"
    code, out, err = run(capsys, "--utc", "--ledger", ledger, "--index", "oai_circuit", e7_journal(tmp_path))
    assert code == 2
    line = next(x for x in err.splitlines() if "resend them with:" in x)
    dead = next(tmp_path.glob("backfill-dead-letters-*.ndjson"))
    assert line.split("resend them with: ", 1)[1] == (
        f"python backfill_hec.py --replay {dead} --ledger '{ledger}' --index oai_circuit")
    env.clear_faults()
    code, out, err = run(capsys, "--replay", dead.name, "--ledger", ledger, "--index", "oai_circuit")
    assert code == 0, err
    assert len({b["event"]["backfill_id"] for b in env.events}) == len(env.events) == 319


def test_guide_snippet_reads_credentials_env_when_the_variables_are_not_exported(env, tmp_path, monkeypatch):
    """The guide's true-up snippet passes os.getenv(...), None when only credentials.env has them."""
    from oai_to_circuit.splunk_hec import SplunkHEC

    (tmp_path / "credentials.env").write_text(f"SPLUNK_HEC_URL={env.url}\nSPLUNK_HEC_TOKEN={TOKEN}\n")
    monkeypatch.delenv("SPLUNK_HEC_URL")
    monkeypatch.delenv("SPLUNK_HEC_TOKEN")
    import os

    hec = SplunkHEC(url=os.getenv("SPLUNK_HEC_URL"), token=os.getenv("SPLUNK_HEC_TOKEN"))
    assert hec.send_usage_event(subkey="egai-prd-sales-backfill", model="gpt-4o-mini", requests=0,
                                prompt_tokens=0, completion_tokens=0, total_tokens=3683,
                                timestamp="2026-01-15T00:00:00Z", backfill=True) is True
    hec.close()
    assert len(env.events) == 1
    assert env.events[0]["time"] == 1768435200.0
    assert env.events[0]["event"]["total_tokens"] == 3683
    (tmp_path / "credentials.env").unlink()
    from oai_to_circuit.errors import ConfigError

    with pytest.raises(ConfigError, match="^SPLUNK_HEC_URL is not set: set it in the environment or in"
                                          " credentials.env"):
        SplunkHEC(url=os.getenv("SPLUNK_HEC_URL"), token=os.getenv("SPLUNK_HEC_TOKEN"))


def test_names_added_after_a_backfill_are_noticed_on_the_next_run(env, tmp_path, capsys, dbe):
    """The guide's 'add names, then backfill' after the range went out without them: said, with the fix."""
    j = e7_journal(tmp_path)
    code, out, err = run(capsys, "--utc", j)  # no names database: events go with the names the service logged
    assert code == 0, err
    sent = {b["event"]["backfill_id"]: b["event"] for b in env.events}
    code, out, err = run(capsys, "--utc", "--db", dbe, "--dry-run", "--force", "--output", "ndjson", j)
    now = {b["event"]["backfill_id"]: b["event"] for b in map(json.loads, out.splitlines())}
    assert now.keys() == sent.keys()
    changed = sum((sent[i].get("friendly_name"), sent[i].get("email")) != (e.get("friendly_name"), e.get("email"))
                  for i, e in now.items())
    assert changed == 107  # the INFO run's events, rebuilt from summary lines, carry no names (charlie's none at all)
    code, out, err = run(capsys, "--utc", "--db", dbe, j)
    assert code == 0, err
    assert len(env.events) == 319  # nothing resent
    assert f"note:      {changed} of the events already sent went without the friendly_name/email" in err
    assert "| lookup subkey_names.csv subkey_sha256 AS subkey OUTPUT friendly_name email" in err


def test_https_to_a_plain_http_collector_stops_at_once_with_exit_2(env, tmp_path, capsys, monkeypatch):
    """A setting, not an outage: no five minutes of retries; every event kept for the replay."""
    monkeypatch.setenv("SPLUNK_HEC_URL", env.url.replace("http://", "https://"))
    code, out, err = run(capsys, "--utc", e7_journal(tmp_path))
    assert code == 2
    assert ("STOPPED:   " + env.url.replace("http://", "https://") + ": TLS error: wrong version number: the collector"
            " does not speak TLS on that port (HEC with SSL off wants http://); check SPLUNK_HEC_URL") in err
    assert "retrying" not in err
    assert env.events == []
    (dead,) = tmp_path.glob("backfill-dead-letters-*.ndjson")
    assert len(dead.read_text().splitlines()) == 319
    monkeypatch.setenv("SPLUNK_HEC_URL", env.url)
    code, out, err = run(capsys, "--replay", dead)
    assert code == 0, err
    assert len({b["event"]["backfill_id"] for b in env.events}) == len(env.events) == 319


def test_a_date_from_another_month_is_said_to_give_the_year_only(env, tmp_path, capsys):
    j = e7_journal(tmp_path)
    code, out, err = run(capsys, "--utc", "--dry-run", "--date", "2026-01-15", j)
    assert code == 0, err
    assert ("note:      --date 2026-01-15 gave the short-view timestamps their year; the events are from"
            " 2026-12-03 .. 2026-12-03 (UTC), not that day: to select days use --since/--until") in err
    assert "ledger:    " + str(tmp_path / "state" / "oai-to-circuit" / "backfill-ledger.db") + \
        " (index oai_circuit) (no ledger yet: nothing was ever sent with it)" in err
    assert "note:      2 of the events to send timed out live: HEC may have indexed them then" in err
    code, out, err = run(capsys, "--utc", "--dry-run", "--date", "2026-12-03", j)
    assert "--date 2026-12-03 gave" not in err


def test_a_replay_reports_what_the_file_held(env, tmp_path, capsys):
    j = e7_journal(tmp_path)
    code, out, err = run(capsys, "--utc", "--dry-run", "--output", "ndjson", "--only-failed", j)
    preview = tmp_path / "failed.ndjson"
    preview.write_text(out)
    code, out, err = run(capsys, "--replay", preview)
    assert code == 0, err
    assert "found:     55 events in the replay file" in err
    assert len(env.events) == 55


def test_the_report_names_the_subkeys_that_went_without_a_name(env, tmp_path, capsys, dbe):
    code, out, err = run(capsys, "--utc", "--dry-run", "--output", "ndjson", "--db", dbe, e7_journal(tmp_path))
    assert code == 0, err
    events = [json.loads(line)["event"] for line in out.splitlines()]
    unnamed = Counter(e["subkey"] for e in events if "friendly_name" not in e)
    assert len(unnamed) == 1  # svc_charlie: no row in subkey_names
    ((key, n),) = unnamed.items()
    named = sum("friendly_name" in e for e in events)
    emails = sum("email" in e for e in events)
    assert (f"names:     friendly_name joined on {named} of 319 events ({emails} with email); no name for 1 subkey:"
            f" {key} ({n} events) (python check_and_setup_names.py prints the --add commands)") in err


def test_a_stop_request_ends_a_dry_run_with_the_report_and_exit_130(env, tmp_path, capsys):
    import threading

    from oai_to_circuit.backfill import run_from_args

    stop = threading.Event()
    stop.set()  # as if SIGTERM came before the first event
    args = backfill_hec.build_parser().parse_args(["--utc", "--dry-run", str(e7_journal(tmp_path))])
    assert run_from_args(args, stop=stop) == 130
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2  # the header and one row
    assert "STOPPED:   on request (SIGTERM or Ctrl-C): 1 events previewed, the rest of the input not read" in err


def test_a_zero_byte_db_is_not_a_database_without_names(env, tmp_path, capsys):
    """What `touch` with a typo leaves: refused like a missing file, not "no table, run --migrate"."""
    empty = tmp_path / "quota.db"
    empty.write_bytes(b"")
    code, out, err = run(capsys, "--utc", "--db", empty, e7_journal(tmp_path))
    assert code == 2 and env.requests == []
    assert err == (f"backfill_hec.py: error: --db: {empty} is empty (0 bytes), so it is not the service's database"
                   f" (check --db); to create a new database there, run add_subkey_names_table.py --init --db {empty};"
                   " fix it, or give --no-names to send without friendly_name/email\n")


def test_a_refused_index_is_not_repeated_in_the_replay_hint(env, tmp_path, capsys, monkeypatch):
    from hec_server import HECServer

    with HECServer(indexes={"oai_circuit"}) as server:
        monkeypatch.setenv("SPLUNK_HEC_URL", server.url)
        code, out, err = run(capsys, "--utc", "--index", "nosuchindex", e7_journal(tmp_path))
    assert code == 2 and "refused index 'nosuchindex' (code 7" in err
    (dead,) = tmp_path.glob("backfill-dead-letters-*.ndjson")
    assert (f"resend them with: python backfill_hec.py --replay {dead} --index INDEX (one that exists and the token"
            " may write to)") in err
