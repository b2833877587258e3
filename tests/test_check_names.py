"""check_and_setup_names.py, called in-process as main([...]) on the real service databases."""
from __future__ import annotations

import io
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from check_and_setup_names import main
from journal_views import fixture
from oai_to_circuit import names

FIX_E = fixture("service-e749b02")
SUBKEYS = FIX_E["subkeys"]
SHA = FIX_E["subkey_sha256_16"]



def run(capsys, *argv):
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def expected_report(db):
    return f"""\
database: {db} (found, 57344 bytes, opened read-only)
schema: current
active subkeys: 5 (from usage, monthly_usage)
  SUBKEY     SHA256                   REQUESTS  TOTAL_TOKENS  LAST_MONTH  STATUS  FRIENDLY_NAME    EMAIL
  svc_char…  sha256:dba1633cbab71a89        75         95997  2026-12     -       (none)           -
  team_alp…  sha256:0396fdc82504f0cc        91        116967  2026-12     -       Team Alpha       alpha-lead@example.com
  team_bra…  sha256:b1411dd751b0d750        61         74979  2026-12     -       Team Bravo       -
  user_del…  sha256:96940bb32ef780f0        49         62611  2026-12     -       Delta Analytics  dana.delta@example.com
  user_ech…  sha256:5d2040a6850dfdba        43         50211  2026-12     -       Équipe Écho      echo@example.com
names matching no active key: 1
  user_fox… sha256:25c53e14e0ad5983 Foxtrot Former (revoked)
named without email (optional): 1
  team_bra… sha256:b1411dd751b0d750 Team Bravo
to fix, run:
  python add_subkey_names_table.py --add --db {db} --subkey {SUBKEYS['charlie']} --name 'FRIENDLY NAME' --email 'EMAIL'
  (or enter the names at a prompt: python check_and_setup_names.py --interactive --db {db})
result: 1 active subkey without a name
"""


def test_e749b02_lists_active_keys_with_fixture_hashes_and_exits_1_until_named(dbe, capsys):
    before = Path(dbe).read_bytes()
    rc, out, err = run(capsys, "--db", dbe)
    assert (rc, err) == (1, "")
    assert out == expected_report(dbe)
    assert Path(dbe).read_bytes() == before  # read-only

    rc, out, _ = run(capsys, "--json", "--db", dbe)
    doc = json.loads(out)
    assert rc == 1
    active = {a["subkey_sha256"]: a for a in doc["active"]}
    # every active key (those with usage) with its sha256: form exactly as fixture.json has it
    assert sorted(active) == sorted(SHA[k] for k in ("alpha", "bravo", "charlie", "delta", "echo"))
    assert active[SHA["charlie"]] == {"subkey": "svc_char...", "subkey_sha256": SHA["charlie"], "requests": 75,
                                      "total_tokens": 95997, "last_month": "2026-12", "status": None,
                                      "friendly_name": None, "email": None}
    assert doc["unnamed"] == [SHA["charlie"]]
    assert doc["without_email"] == [SHA["bravo"]]
    assert [o["subkey_sha256"] for o in doc["orphan_names"]] == [SHA["foxtrot_revoked"]]
    assert doc["orphan_names"][0]["status"] == "revoked"
    assert SHA["zulu_unknown"] not in active  # refused by the service: no usage, so not active
    assert (doc["schema"], doc["ok"], sum(a["requests"] for a in doc["active"])) == ("current", False, 319)
    assert (doc["usage_tables"], doc["service_database"]) == (["usage", "monthly_usage"], True)

    # run the printed command (with a real name), then the check passes
    from add_subkey_names_table import main as add_main
    assert add_main(["--add", "--db", dbe, "--subkey", SUBKEYS["charlie"], "--name", "Charlie Service",
                     "--email", "charlie@example.com"]) == 0
    capsys.readouterr()
    rc, out, _ = run(capsys, "--db", dbe)
    assert rc == 0
    assert out.splitlines()[-1] == "result: ok"
    assert "  svc_char…  sha256:dba1633cbab71a89        75         95997  2026-12     -       Charlie Service  charlie@example.com" in out.splitlines()


def test_9c7664e_without_table_exit_1_then_fix_and_names(db9, capsys):
    rc, out, err = run(capsys, "--db", db9)
    assert (rc, err) == (1, "")
    lines = out.splitlines()
    assert lines[1] == "schema: subkey_names table missing (pending: 0001_create_subkey_names, 0003_subkey_names_friendly_name_index)"
    assert lines[2] == "active subkeys: 7 (from usage)"
    assert f"  python add_subkey_names_table.py --migrate --db {db9}" in lines
    assert lines[-1] == "result: schema subkey_names table missing; 7 active subkeys without a name"
    with closing(sqlite3.connect(db9)) as c:
        assert [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["usage"]

    rc, out, err = run(capsys, "--fix", "--db", db9)
    assert rc == 1  # schema fixed, names still missing
    assert err.splitlines()[1:] == [
        "migrated: 0001_create_subkey_names (create table subkey_names)",
        "migrated: 0003_subkey_names_friendly_name_index (create index idx_friendly_name on subkey_names(friendly_name))"]
    assert out.splitlines()[1] == "schema: current"
    rc, out, err = run(capsys, "--fix", "--db", db9)
    assert err == f"{db9}: schema already up to date\n"

    for label in SUBKEYS:
        names.upsert_name(db9, SUBKEYS[label], f"Name {label}")
    rc, out, _ = run(capsys, "--db", db9)
    assert rc == 0 and out.splitlines()[-1] == "result: ok"
    with closing(sqlite3.connect(db9)) as c:
        assert c.execute("SELECT count(*), sum(requests) FROM usage").fetchone() == (33, 186)


def test_interactive_names_the_missing_key_via_input_fn(dbe):
    answers = iter(["Charlie Service", "charlie@example.com"])
    out, err = io.StringIO(), io.StringIO()
    rc = names.check(dbe, interactive=True, input_fn=lambda prompt: next(answers), out=out, err=err)
    assert rc == 0
    assert err.getvalue() == "saved: svc_char… sha256:dba1633cbab71a89 Charlie Service <charlie@example.com>\n"
    assert out.getvalue().splitlines()[-1] == "result: ok"


def test_interactive_skip_and_end_of_input_keep_exit_1(dbe):
    out, err = io.StringIO(), io.StringIO()
    rc = names.check(dbe, interactive=True, input_fn=lambda prompt: "", out=out, err=err)
    assert (rc, err.getvalue()) == (1, "")

    def eof(prompt):
        raise EOFError

    rc = names.check(dbe, interactive=True, input_fn=eof, out=io.StringIO(), err=err)
    assert (rc, err.getvalue()) == (1, "end of input: stopping\n")


def test_interactive_through_main_reads_stdin(dbe, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("Charlie Service\n\n"))
    rc, out, err = run(capsys, "--interactive", "--json", "--db", dbe)
    assert rc == 0
    assert json.loads(out)["ok"] is True  # stdout stays pure JSON; the prompts went to stderr
    assert err == ("name for svc_char… sha256:dba1633cbab71a89 (75 requests; empty = skip): "
                   "email for Charlie Service (empty = none): "
                   "saved: svc_char… sha256:dba1633cbab71a89 Charlie Service\n")


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_check_reads_while_the_service_holds_a_write_transaction(dbe, capsys, journal_mode):
    holder = sqlite3.connect(dbe, isolation_level=None)
    holder.execute(f"PRAGMA journal_mode={journal_mode}")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE usage SET requests = requests + 1000")
    try:
        t0 = time.monotonic()
        rc, out, err = run(capsys, "--db", dbe, "--timeout", "5")
        assert time.monotonic() - t0 < 2.5  # did not wait for the lock (that would take 5 s)
        size = Path(dbe).stat().st_size
        assert (rc, err) == (1, "")
        assert out == expected_report(dbe).replace("57344 bytes", f"{size} bytes")  # committed data only
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_locked_database_is_reported_as_locked_not_as_no_keys(dbe, capsys):
    holder = sqlite3.connect(dbe, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        rc, out, err = run(capsys, "--db", dbe, "--timeout", "0.2")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (rc, out) == (2, "")
    assert err == (f"check_and_setup_names.py: error: {dbe}: database is locked (waited 0.2 s to read; another process, normally the running "
                   "service, holds the lock): stop it with `sudo systemctl stop oai-to-circuit` and retry, or raise --timeout\n")


def test_unreadable_database_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.db"
    rc, out, err = run(capsys, "--db", str(missing))
    assert (rc, out, err) == (2, "", f"check_and_setup_names.py: error: no database at {missing}\n")
    assert not missing.exists()
    rc, out, err = run(capsys, "--db", str(tmp_path / "nodir" / "q.db"))
    assert (rc, err) == (2, f"check_and_setup_names.py: error: no database at {tmp_path / 'nodir' / 'q.db'} (directory {tmp_path / 'nodir'} does not exist)\n")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00garbage" * 100)
    rc, out, err = run(capsys, "--db", str(junk))
    assert (rc, out, err) == (2, "", f"check_and_setup_names.py: error: {junk} is not a SQLite database\n")
    rc, out, err = run(capsys, "--db", str(tmp_path))
    assert (rc, err) == (2, f"check_and_setup_names.py: error: {tmp_path} is a directory, not a SQLite database\n")


@pytest.mark.parametrize("kind", ["other tables", "empty file"])
def test_sqlite_file_without_usage_tables_is_not_the_service_db_exit_1(tmp_path, capsys, kind):
    """A wrong --db (e.g. an empty file a mistyped path left) is not "0 active subkeys, ok"."""
    db = tmp_path / "other.db"
    if kind == "empty file":
        db.touch()
    else:
        with closing(sqlite3.connect(db)) as c:
            c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
            c.commit()
    before = db.read_bytes()
    size = db.stat().st_size
    rc, out, err = run(capsys, "--db", str(db))
    assert (rc, err) == (1, "")
    assert out == (f"database: {db} (found, {size} bytes, opened read-only)\n"
                   f"not the service's database: it has no usage or monthly_usage table (check --db or QUOTA_DB_PATH)\n"
                   "result: not the service's database\n")

    rc, out, err = run(capsys, "--json", "--db", str(db))
    doc = json.loads(out)
    assert (rc, err) == (1, "")
    assert (doc["service_database"], doc["ok"], doc["usage_tables"], doc["active"], doc["commands"]) == (
        False, False, [], [], [])

    rc, out, err = run(capsys, "--fix", "--db", str(db))  # not migrated: it is somebody else's file
    assert rc == 1
    assert err == f"{db}: not migrated: it has no usage or monthly_usage table, so it is not the service's quota.db\n"
    assert out.splitlines()[-1] == "result: not the service's database"
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_interactive_name_another_key_has_is_saved_with_a_warning(dbe):
    answers = iter(["Team Alpha", ""])
    err = io.StringIO()
    assert names.interactive_setup(dbe, input_fn=lambda prompt: next(answers), err=err) == 1
    assert err.getvalue().splitlines() == [
        "saved: svc_char… sha256:dba1633cbab71a89 Team Alpha",
        "check_and_setup_names.py: warning: friendly name 'Team Alpha' of svc_char… sha256:dba1633cbab71a89 is also"
        " the name of team_alp… sha256:0396fdc82504f0cc: Splunk and the check tell them apart only by sha256",
    ]
    assert names.name_lookup(dbe)[SUBKEYS["charlie"]] == names.Name("Team Alpha", None, None)
