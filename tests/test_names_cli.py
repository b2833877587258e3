"""add_subkey_names_table.py, called in-process as main([...]): every command of the backfill guide."""
from __future__ import annotations

import json
import os
import sys
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from add_subkey_names_table import main
from journal_views import fixture
from oai_to_circuit import names

FIX_E = fixture("service-e749b02")
SUBKEYS = FIX_E["subkeys"]
SHA = FIX_E["subkey_sha256_16"]



def count(db, table):
    c = sqlite3.connect(db)
    try:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        c.close()


def rows(db, sql, *args):
    c = sqlite3.connect(db)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def run(capsys, *argv):
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# --------------------------------------------------------------------------- --migrate / --init


def test_migrate_9c7664e_then_rerun_says_already_up_to_date(db9, capsys):
    assert count(db9, "usage") == 33
    usage = rows(db9, "SELECT * FROM usage ORDER BY subkey, model")

    rc, out, err = run(capsys, "--migrate", "--db", db9)
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 4
    assert re.fullmatch(re.escape(f"backup: {db9}.backup-") + r"\d{8}T\d{6}Z", lines[0])
    assert lines[1:] == [
        "applied: 0001_create_subkey_names (create table subkey_names)",
        "applied: 0003_subkey_names_friendly_name_index (create index idx_friendly_name on subkey_names(friendly_name))",
        f"{db9}: schema is current",
    ]
    backup = lines[0].split(": ", 1)[1]
    assert count(backup, "usage") == 33

    rc, out, err = run(capsys, "--migrate", "--db", db9)
    assert (rc, out, err) == (0, f"{db9}: already up to date; nothing changed\n", "")
    assert count(db9, "usage") == 33
    assert rows(db9, "SELECT * FROM usage ORDER BY subkey, model") == usage
    assert count(db9, "subkey_names") == 0
    assert len(list(Path(db9).parent.glob("quota.db.backup-*"))) == 1  # no second backup


def test_migrate_dry_run_shows_steps_and_changes_nothing(db9, capsys):
    before = Path(db9).read_bytes()
    rc, out, err = run(capsys, "--migrate", "--dry-run", "--db", db9)
    assert rc == 0 and err == ""
    assert out.splitlines() == [
        f"would back up {db9} first (unless --no-backup)",
        "would apply: 0001_create_subkey_names (create table subkey_names): CREATE TABLE IF NOT EXISTS subkey_names "
        "( subkey TEXT PRIMARY KEY, friendly_name TEXT NOT NULL, email TEXT, description TEXT, created_at TIMESTAMP "
        "DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP )",
        "would apply: 0003_subkey_names_friendly_name_index (create index idx_friendly_name on subkey_names(friendly_name)): "
        "CREATE INDEX IF NOT EXISTS idx_friendly_name ON subkey_names(friendly_name)",
    ]
    assert Path(db9).read_bytes() == before


def test_migrate_no_backup(db9, capsys):
    rc, out, _ = run(capsys, "--migrate", "--no-backup", "--db", db9)
    assert rc == 0 and "backup:" not in out
    assert sorted(p.name for p in Path(db9).parent.iterdir()) == ["quota.db"]


def test_migrate_pre_email_table_via_cli(tmp_path, capsys):
    db = str(tmp_path / "old.db")
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE subkey_names (subkey TEXT PRIMARY KEY, friendly_name TEXT NOT NULL, description TEXT,"
              " created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)")
    c.execute("INSERT INTO subkey_names VALUES (?, 'Team Alpha', 'd', '2025-06-01 09:00:00', '2025-06-01 09:00:00')",
              (SUBKEYS["alpha"],))
    c.commit()
    c.close()
    # the guide: "Check if migration is needed: --list" -> it says so (stderr) and still lists
    rc, out, err = run(capsys, "--list", "--db", db)
    assert rc == 0
    assert err == f"warning: {db}: subkey_names has no email column (run add_subkey_names_table.py --migrate)\n"
    assert out.splitlines()[1] == "team_alp…  sha256:0396fdc82504f0cc  Team Alpha     -      d            2025-06-01 09:00:00 UTC"
    rc, out, err = run(capsys, "--migrate", "--db", db)
    assert rc == 0
    assert "applied: 0002_subkey_names_email (add column subkey_names.email)" in out.splitlines()
    assert rows(db, "SELECT subkey, friendly_name, description, created_at, email FROM subkey_names") == [
        (SUBKEYS["alpha"], "Team Alpha", "d", "2025-06-01 09:00:00", None)]
    rc, out, err = run(capsys, "--migrate", "--db", db)
    assert out == f"{db}: already up to date; nothing changed\n"


def test_init_creates_database_when_directory_exists(tmp_path, capsys):
    db = str(tmp_path / "new.db")
    rc, out, err = run(capsys, "--init", "--db", db)
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        f"created new database {db} (mode 0600; the directory existed)",
        "applied: 0001_create_subkey_names (create table subkey_names)",
        "applied: 0003_subkey_names_friendly_name_index (create index idx_friendly_name on subkey_names(friendly_name))",
        f"{db}: schema is current",
    ]
    assert oct(os.stat(db).st_mode & 0o777) == "0o600"
    rc, out, _ = run(capsys, "--init", "--db", db)
    assert out == f"{db}: already up to date; nothing changed\n"


def test_init_in_missing_directory_fails_with_one_line(tmp_path, capsys):
    db = str(tmp_path / "nodir" / "quota.db")
    rc, out, err = run(capsys, "--init", "--db", db)
    assert (rc, out) == (2, "")
    assert err == f"add_subkey_names_table.py: error: cannot create {db}: directory {tmp_path / 'nodir'} does not exist\n"
    assert not (tmp_path / "nodir").exists()


WRITE_COMMANDS = [
    ["--migrate"],
    ["--migrate", "--dry-run"],
    ["--add", "--subkey", "k_1234567890", "--name", "N"],
    ["--remove", "--subkey", "k_1234567890"],
    ["--import", "names.csv"],
]


@pytest.mark.parametrize("where", ["missing.db", "nodir/quota.db"])
@pytest.mark.parametrize("argv", WRITE_COMMANDS)
def test_write_commands_on_missing_database_fail_and_create_nothing(tmp_path, capsys, argv, where):
    """A mistyped --db: --migrate no longer makes a new empty database; only --init creates.

    In a missing directory --init could not create it either, so the message names the directory.
    """
    db = str(tmp_path / where)
    (tmp_path / "names.csv").write_text("subkey,friendly_name\nk_1234567890,N\n", encoding="utf-8")
    argv = [str(tmp_path / a) if a == "names.csv" else a for a in argv]
    rc, out, err = run(capsys, *argv, "--db", db)
    assert (rc, out) == (2, "")
    why = (f"directory {tmp_path / 'nodir'} does not exist" if where.startswith("nodir/")
           else f"create one with add_subkey_names_table.py --init --db {db}")
    assert err == f"add_subkey_names_table.py: error: no database at {db} ({why})\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names.csv"]


def test_init_dry_run_on_missing_file_says_it_would_create_it(tmp_path, capsys):
    db = str(tmp_path / "new.db")
    rc, out, err = run(capsys, "--init", "--dry-run", "--db", db)
    assert (rc, err) == (0, "")
    assert out.splitlines()[0] == f"would create new database {db}"
    assert [ln.split(":")[0] for ln in out.splitlines()[1:]] == ["would apply", "would apply"]
    assert list(tmp_path.iterdir()) == []


def test_not_a_sqlite_file_is_one_line(tmp_path, capsys):
    db = tmp_path / "quota.db"
    db.write_text("hello " * 200)
    for argv in (["--list"], ["--migrate"], ["--add", "--subkey", "k_123456789", "--name", "N"]):
        rc, out, err = run(capsys, *argv, "--db", str(db))
        assert (rc, out, err) == (2, "", f"add_subkey_names_table.py: error: {db} is not a SQLite database\n")


def test_read_only_file_is_one_line(dbe, capsys):
    if os.geteuid() != 0:
        os.chmod(dbe, 0o444)
        rc, out, err = run(capsys, "--add", "--subkey", SUBKEYS["charlie"], "--name", "C", "--db", dbe)
        assert rc == 2 and "is read-only" in err and len(err.splitlines()) == 1
        return
    # root ignores file modes: the same call in a forked child that became nobody (no exec: the
    # interpreter lives under /root); a first call as root imports every module the path needs
    import shutil
    import tempfile

    import add_subkey_names_table

    argv = ["--add", "--subkey", SUBKEYS["charlie"], "--name", "C", "--db"]
    assert run(capsys, *argv, str(dbe))[0] == 0
    argv[4] = "Charlie"  # a change, so the child has to write
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        db = Path(d) / "quota.db"
        shutil.copyfile(dbe, db)
        os.chmod(db, 0o444)
        before = db.read_bytes()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: nobody, stderr into the pipe
            try:
                os.close(r)
                os.setgid(65534)
                os.setuid(65534)
                os.dup2(w, 2)
                sys.stderr = os.fdopen(2, "w")
                rc = add_subkey_names_table.main(argv + [str(db)])
                sys.stderr.flush()
            except BaseException:
                rc = 99
            os._exit(rc)
        os.close(w)
        with os.fdopen(r) as fh:
            err = fh.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 2, err
        assert err.startswith(f"add_subkey_names_table.py: error: {db} is read-only") and len(err.splitlines()) == 1
        assert db.read_bytes() == before


# --------------------------------------------------------------------------- --add / --remove / --list


def test_guide_scenario_3_migrate_then_add_names_from_fixture(db9, capsys):
    """Migrate the pre-names database, add the fixture's names, and the lookup the backfill uses finds them."""
    assert run(capsys, "--migrate", "--db", db9)[0] == 0
    for label, (fname, email, desc) in FIX_E["names"].items():
        argv = ["--add", "--db", db9, "--subkey", SUBKEYS[label], "--name", fname, "--description", desc]
        if email:
            argv += ["--email", email]
        rc, out, err = run(capsys, *argv)
        assert (rc, err) == (0, "")
        assert out.startswith(f"inserted: {SUBKEYS[label][:8]}… {SHA[label]} {fname}")
    assert count(db9, "usage") == 33
    assert count(db9, "subkey_names") == 5
    lookup = names.name_lookup(db9)
    assert lookup[SHA["echo"]] == names.Name("Équipe Écho", "echo@example.com", "non-ASCII friendly name")
    assert lookup[SUBKEYS["alpha"]] == names.Name("Team Alpha", "alpha-lead@example.com", "sample fixture")
    assert lookup[SHA["bravo"]].email is None


def test_add_with_only_name_keeps_email_description_created_at(dbe, capsys):
    rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", SUBKEYS["alpha"], "--name", "Team Alpha (EMEA)")
    assert (rc, err) == (0, "")
    assert out == "updated: team_alp… sha256:0396fdc82504f0cc Team Alpha (EMEA) <alpha-lead@example.com> (friendly_name)\n"
    (name, email, desc, created, updated), = rows(
        dbe, "SELECT friendly_name, email, description, created_at, updated_at FROM subkey_names WHERE subkey=?",
        SUBKEYS["alpha"])
    assert (name, email, desc, created) == ("Team Alpha (EMEA)", "alpha-lead@example.com", "sample fixture",
                                            "2026-12-03 18:23:27")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", updated) and updated != created
    assert count(dbe, "subkey_names") == 5


def test_add_new_subkey_inserts_and_same_again_is_unchanged(dbe, capsys):
    argv = ["--add", "--db", dbe, "--subkey", SUBKEYS["charlie"], "--name", " Charlie Service ",
            "--email", " charlie@example.com "]
    rc, out, _ = run(capsys, *argv)
    assert (rc, out) == (0, "inserted: svc_char… sha256:dba1633cbab71a89 Charlie Service <charlie@example.com>\n")
    rc, out, _ = run(capsys, *argv)
    assert (rc, out) == (0, "unchanged: svc_char… sha256:dba1633cbab71a89 Charlie Service <charlie@example.com>\n")
    assert count(dbe, "subkey_names") == 6


def test_add_invalid_email_is_refused(dbe, capsys):
    rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", SUBKEYS["charlie"], "--name", "C", "--email", "EMAIL")
    assert (rc, out) == (2, "")
    assert err == "add_subkey_names_table.py: error: invalid email 'EMAIL': expected one address like user@example.com\n"
    assert count(dbe, "subkey_names") == 5


def test_add_on_database_without_table_migrates_first(db9, capsys):
    rc, out, err = run(capsys, "--add", "--db", db9, "--subkey", SUBKEYS["alpha"], "--name", "Team Alpha")
    assert rc == 0
    assert out == "inserted: team_alp… sha256:0396fdc82504f0cc Team Alpha\n"
    e = err.splitlines()
    assert e[0].startswith(f"backup: {db9}.backup-")
    assert e[1:] == ["migrated: 0001_create_subkey_names (create table subkey_names)",
                     "migrated: 0003_subkey_names_friendly_name_index (create index idx_friendly_name on subkey_names(friendly_name))"]


def test_remove(dbe, capsys):
    rc, out, err = run(capsys, "--remove", "--db", dbe, "--subkey", SUBKEYS["foxtrot_revoked"])
    assert (rc, out, err) == (0, "removed: user_fox… sha256:25c53e14e0ad5983 Foxtrot Former <foxtrot@example.com>\n", "")
    assert count(dbe, "subkey_names") == 4
    rc, out, err = run(capsys, "--remove", "--db", dbe, "--subkey", SUBKEYS["foxtrot_revoked"])
    assert (rc, out) == (1, "")
    assert err == f"add_subkey_names_table.py: error: no name for subkey user_fox… in {dbe}; nothing removed\n"


LIST_TABLE = """\
SUBKEY     SHA256                   FRIENDLY_NAME    EMAIL                   DESCRIPTION              UPDATED_AT
user_del…  sha256:96940bb32ef780f0  Delta Analytics  dana.delta@example.com  sample fixture           2026-12-03 18:23:27 UTC
user_ech…  sha256:5d2040a6850dfdba  Équipe Écho      echo@example.com        non-ASCII friendly name  2026-12-03 18:23:27 UTC
user_fox…  sha256:25c53e14e0ad5983  Foxtrot Former   foxtrot@example.com     revoked before the run   2026-12-03 18:23:27 UTC
team_alp…  sha256:0396fdc82504f0cc  Team Alpha       alpha-lead@example.com  sample fixture           2026-12-03 18:23:27 UTC
team_bra…  sha256:b1411dd751b0d750  Team Bravo       -                       no email on file         2026-12-03 18:23:27 UTC
"""


def test_list_table_sorted_by_name_with_utc(dbe, capsys):
    rc, out, err = run(capsys, "--list", "--db", dbe)
    assert (rc, out, err) == (0, LIST_TABLE, "")


def test_list_show_subkeys(dbe, capsys):
    rc, out, _ = run(capsys, "--list", "--show-subkeys", "--db", dbe)
    assert rc == 0
    assert out.splitlines()[1].startswith(SUBKEYS["delta"] + "    sha256:96940bb32ef780f0  Delta Analytics  ")
    assert out.count(SUBKEYS["alpha"]) == 1 and "…" not in out


def test_list_csv_and_json(dbe, capsys):
    rc, out, _ = run(capsys, "--list", "--format", "csv", "--db", dbe)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "subkey,friendly_name,email,description,subkey_sha256,created_at,updated_at"
    assert lines[1] == ("user_del...,Delta Analytics,dana.delta@example.com,sample fixture,sha256:96940bb32ef780f0,"
                        "2026-12-03T18:23:27Z,2026-12-03T18:23:27Z")
    assert lines[5] == ("team_bra...,Team Bravo,,no email on file,sha256:b1411dd751b0d750,"
                        "2026-12-03T18:23:27Z,2026-12-03T18:23:27Z")
    assert len(lines) == 6
    rc, out, _ = run(capsys, "--list", "--format", "json", "--db", dbe)
    doc = json.loads(out)
    assert [d["friendly_name"] for d in doc] == ["Delta Analytics", "Équipe Écho", "Foxtrot Former", "Team Alpha", "Team Bravo"]
    assert doc[3] == {"subkey": "team_alp...", "friendly_name": "Team Alpha", "email": "alpha-lead@example.com",
                      "description": "sample fixture", "subkey_sha256": "sha256:0396fdc82504f0cc",
                      "created_at": "2026-12-03T18:23:27Z", "updated_at": "2026-12-03T18:23:27Z"}


def test_list_on_database_without_table_says_to_migrate(db9, capsys):
    rc, out, err = run(capsys, "--list", "--db", db9)
    assert (rc, out) == (2, "")
    assert err == f"add_subkey_names_table.py: error: {db9} has no subkey_names table (run add_subkey_names_table.py --migrate)\n"


def test_db_defaults_to_quota_db_path_then_credentials_env(dbe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUOTA_DB_PATH", dbe)
    rc, out, _ = run(capsys, "--list")
    assert (rc, out) == (0, LIST_TABLE)
    monkeypatch.delenv("QUOTA_DB_PATH")
    (tmp_path / "credentials.env").write_text(f"QUOTA_DB_PATH={dbe}\nSPLUNK_VERIFY_SSL=/no/such/bundle\n")
    rc, out, _ = run(capsys, "--list")
    assert (rc, out) == (0, LIST_TABLE)


@pytest.mark.parametrize("argv, message", [
    (["--list", "--name", "x"], "--name only goes with --add"),
    (["--add", "--name", "x"], "--add needs --subkey"),
    (["--list", "--output", "f"], "--output only goes with --export"),
    (["--add", "--subkey", "k", "--dry-run"], "--dry-run only goes with --migrate, --init or --import"),
])
def test_bad_flag_combinations_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err == f"add_subkey_names_table.py: error: {message} (see add_subkey_names_table.py --help)\n"


# --------------------------------------------------------------------------- --export / --import


def test_export_csv_stdout_and_output_file_0600(dbe, tmp_path, capsys):
    rc, out, err = run(capsys, "--export", "--db", dbe)
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 6
    assert lines[1].startswith(SUBKEYS["delta"] + ",Delta Analytics,dana.delta@example.com,")
    target = tmp_path / "names.json"
    rc, out, err = run(capsys, "--export", "--format", "json", "--output", str(target), "--db", dbe)
    assert (rc, out, err) == (0, "", f"exported 5 names to {target} (mode 0600)\n")
    assert oct(os.stat(target).st_mode & 0o777) == "0o600"
    assert [d["subkey"] for d in json.loads(target.read_text(encoding="utf-8"))][0] == SUBKEYS["delta"]


def test_import_reports_counts_and_dry_run_writes_nothing(dbe, tmp_path, capsys):
    f = tmp_path / "names.csv"
    f.write_text("\ufeffsubkey,friendly_name,email,description\r\n"
                 f"{SUBKEYS['charlie']},Charlie Service,charlie@example.com,batch\r\n"
                 f"{SUBKEYS['zulu_unknown']},Zulu,,\r\n"
                 f"{SUBKEYS['bravo']},Team Bravo,bravo@example.com,\r\n"
                 f"{SUBKEYS['alpha']},Team Alpha,alpha-lead@example.com,sample fixture\r\n", encoding="utf-8")
    before = rows(dbe, "SELECT * FROM subkey_names ORDER BY subkey")
    rc, out, err = run(capsys, "--import", str(f), "--dry-run", "--db", dbe)
    assert (rc, out, err) == (0, f"would import {f}: 2 inserted, 1 updated, 1 unchanged\n", "")
    assert rows(dbe, "SELECT * FROM subkey_names ORDER BY subkey") == before
    rc, out, err = run(capsys, "--import", str(f), "--db", dbe)
    assert (rc, out, err) == (0, f"imported {f}: 2 inserted, 1 updated, 1 unchanged\n", "")
    assert count(dbe, "subkey_names") == 7
    rc, out, err = run(capsys, "--import", str(f), "--db", dbe)
    assert out == f"imported {f}: 0 inserted, 0 updated, 4 unchanged\n"


def test_import_invalid_row_writes_nothing(dbe, tmp_path, capsys):
    f = tmp_path / "names.csv"
    f.write_text("subkey,friendly_name,email\n"
                 f"{SUBKEYS['charlie']},Charlie,charlie@example.com\n"
                 f"{SUBKEYS['zulu_unknown']},,\n", encoding="utf-8")
    rc, out, err = run(capsys, "--import", str(f), "--db", dbe)
    assert (rc, out) == (2, "")
    assert err == f"add_subkey_names_table.py: error: --import {f}: line 3: friendly_name is empty; nothing was written\n"
    assert count(dbe, "subkey_names") == 5


# --------------------------------------------------------------------------- locking


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_writer_holding_the_lock(dbe, capsys, journal_mode):
    """The service mid-transaction: reads work at once; --add waits --timeout, exits 2, writes nothing."""
    holder = sqlite3.connect(dbe, isolation_level=None)
    assert holder.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE usage SET requests = requests + 1")
    holder.execute("INSERT INTO subkey_names(subkey, friendly_name) VALUES ('held_by_service', 'Service Row')")
    try:
        t0 = time.monotonic()
        rc, out, err = run(capsys, "--list", "--db", dbe, "--timeout", "5")
        assert time.monotonic() - t0 < 2.5  # did not wait for the lock (that would take 5 s)
        assert (rc, out, err) == (0, LIST_TABLE, "")

        t0 = time.monotonic()
        rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", SUBKEYS["charlie"], "--name", "Charlie",
                           "--timeout", "0.5")
        waited = time.monotonic() - t0
        assert (rc, out) == (2, "")
        assert err == (f"add_subkey_names_table.py: error: {dbe}: database is locked (waited 0.5 s to write; another process, normally the "
                       "running service, holds the lock): stop it with `sudo systemctl stop oai-to-circuit` "
                       "and retry, or raise --timeout\n")
        assert 0.5 <= waited < 3.0

        f = Path(dbe).parent / "n.csv"
        f.write_text(f"subkey,friendly_name\n{SUBKEYS['charlie']},Charlie\n{SUBKEYS['alpha']},Alpha 2\n")
        rc, _, err = run(capsys, "--import", str(f), "--db", dbe, "--timeout", "0.2")
        assert rc == 2 and "database is locked" in err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # nothing half-written: neither ours nor the rolled-back service transaction
    assert count(dbe, "subkey_names") == 5
    assert rows(dbe, "SELECT friendly_name FROM subkey_names WHERE subkey=?", SUBKEYS["alpha"]) == [("Team Alpha",)]
    assert rows(dbe, "SELECT sum(requests) FROM usage") == [(319,)]
    # and once the lock is gone the same command works
    rc, out, _ = run(capsys, "--add", "--db", dbe, "--subkey", SUBKEYS["charlie"], "--name", "Charlie", "--timeout", "0.5")
    assert (rc, out) == (0, "inserted: svc_char… sha256:dba1633cbab71a89 Charlie\n")


def test_add_waits_for_a_short_lock_then_succeeds(dbe, capsys):
    holder = sqlite3.connect(dbe, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE usage SET requests = requests + 1")
    release = threading.Timer(0.4, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        t0 = time.monotonic()
        rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", SUBKEYS["charlie"], "--name", "Charlie",
                           "--timeout", "5")
        waited = time.monotonic() - t0
    finally:
        release.join()
        holder.close()
    assert (rc, out, err) == (0, "inserted: svc_char… sha256:dba1633cbab71a89 Charlie\n", "")
    assert 0.3 <= waited < 5
    assert rows(dbe, "SELECT sum(requests) FROM usage") == [(319 + 26,)]  # the service's commit landed too
    assert rows(dbe, "SELECT count(*) FROM usage") == [(26,)]


def test_migrate_under_lock_leaves_step_pending(db9, capsys):
    holder = sqlite3.connect(db9, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE usage SET requests = requests + 1")
    try:
        rc, out, err = run(capsys, "--migrate", "--db", db9, "--timeout", "0.3")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert rc == 2 and "database is locked (waited 0.3 s to write" in err
    assert rows(db9, "SELECT name FROM sqlite_master WHERE type='table'") == [("usage",)]
    rc, out, _ = run(capsys, "--migrate", "--db", db9)
    assert rc == 0 and out.endswith(f"{db9}: schema is current\n")


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_migrate_locked_leaves_no_backup_and_the_database_unchanged(db9, capsys, journal_mode):
    """The backup is taken only under the write lock: retries against a busy service pile up no backups."""
    holder = sqlite3.connect(db9, isolation_level=None)
    assert holder.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode
    before = Path(db9).read_bytes()
    usage = rows(db9, "SELECT * FROM usage ORDER BY subkey, model")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE usage SET requests = requests + 1")
    try:
        for _ in range(2):  # the operator retries
            t0 = time.monotonic()
            rc, out, err = run(capsys, "--migrate", "--db", db9, "--timeout", "1")
            assert 1 <= time.monotonic() - t0 < 4
            assert (rc, out) == (2, "")
            assert err == (f"add_subkey_names_table.py: error: {db9}: database is locked (waited 1 s to write; another "
                           "process, normally the running service, holds the lock): stop it with "
                           "`sudo systemctl stop oai-to-circuit` and retry, or raise --timeout\n")
            assert list(Path(db9).parent.glob("quota.db.backup-*")) == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert Path(db9).read_bytes() == before
    assert rows(db9, "SELECT name FROM sqlite_master") == [("usage",), ("sqlite_autoindex_usage_1",)]
    assert rows(db9, "SELECT * FROM usage ORDER BY subkey, model") == usage
    rc, out, _ = run(capsys, "--migrate", "--db", db9)  # once the lock is free: one backup, then the steps
    assert rc == 0 and out.endswith(f"{db9}: schema is current\n")
    assert len(list(Path(db9).parent.glob("quota.db.backup-*"))) == 1


def test_remove_under_an_exclusive_lock_is_the_locked_line_not_a_traceback(dbe, capsys):
    import sqlite3 as _sqlite3

    holder = _sqlite3.connect(dbe, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        rc = main(["--remove", "--subkey", SUBKEYS["alpha"], "--db", dbe, "--timeout", "0.2"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert rc == 2 and "database is locked" in err and "systemctl stop oai-to-circuit" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --------------------------------------------------------------------------- operator trial: warnings, empty file


def test_add_a_name_another_subkey_has_warns_once_and_saves_it(dbe, capsys):
    """Two keys of one team may share a name: accepted, but said, with the other key's short and sha256 forms."""
    rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", SUBKEYS["charlie"], "--name", "Team Alpha")
    assert (rc, out) == (0, "inserted: svc_char… sha256:dba1633cbab71a89 Team Alpha\n")
    assert err == ("add_subkey_names_table.py: warning: friendly name 'Team Alpha' of svc_char… sha256:dba1633cbab71a89"
                   " is also the name of team_alp… sha256:0396fdc82504f0cc: Splunk and the check tell them apart only"
                   " by sha256\n")
    assert rows(dbe, "SELECT friendly_name FROM subkey_names WHERE subkey=?", SUBKEYS["charlie"]) == [("Team Alpha",)]
    assert count(dbe, "subkey_names") == 6
    # said once, when the name is written: the same again, or another field only, is quiet
    rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", SUBKEYS["charlie"], "--name", "Team Alpha")
    assert (rc, out, err) == (0, "unchanged: svc_char… sha256:dba1633cbab71a89 Team Alpha\n", "")
    rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", SUBKEYS["charlie"], "--email", "c@example.com")
    assert (rc, err) == (0, "")


def test_add_name_clash_is_trimmed_and_case_insensitive_and_names_the_stored_form(dbe, capsys):
    rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", SUBKEYS["bravo"], "--name", "  TEAM alpha ")
    assert (rc, out) == (0, "updated: team_bra… sha256:b1411dd751b0d750 TEAM alpha (friendly_name)\n")
    assert err == ("add_subkey_names_table.py: warning: friendly name 'TEAM alpha' of team_bra… sha256:b1411dd751b0d750"
                   " is also the name of team_alp… sha256:0396fdc82504f0cc (as 'Team Alpha'): Splunk and the check"
                   " tell them apart only by sha256\n")
    assert rows(dbe, "SELECT friendly_name FROM subkey_names WHERE subkey=?", SUBKEYS["bravo"]) == [("TEAM alpha",)]
    # a key's own name is no clash: renaming it in another case is quiet
    rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", SUBKEYS["delta"], "--name", "DELTA ANALYTICS")
    assert (rc, err) == (0, "")


def test_import_warns_once_per_clash_in_dry_run_and_real_run(dbe, tmp_path, capsys):
    f = tmp_path / "names.csv"
    f.write_text("subkey,friendly_name,email\n"
                 f"{SUBKEYS['charlie']},team bravo,\n"          # clashes with the stored Team Bravo
                 f"{SUBKEYS['alpha']},Team Alpha,\n"            # its own name, unchanged: quiet
                 f"{SUBKEYS['zulu_unknown']},Team Bravo,\n"     # clashes with Team Bravo and line 2
                 f"{SUBKEYS['delta']},Delta Analytics,\n", encoding="utf-8")
    warnings = [
        f"add_subkey_names_table.py: warning: --import {f}: line 2: friendly name 'team bravo' of svc_char… "
        "sha256:dba1633cbab71a89 is also the name of team_bra… sha256:b1411dd751b0d750 (as 'Team Bravo'): "
        "Splunk and the check tell them apart only by sha256",
        f"add_subkey_names_table.py: warning: --import {f}: line 4: friendly name 'Team Bravo' of zz_unkno… "
        "sha256:292c5bda120b5986 is also the name of svc_char… sha256:dba1633cbab71a89 (as 'team bravo'), "
        "team_bra… sha256:b1411dd751b0d750: Splunk and the check tell them apart only by sha256",
    ]
    before = rows(dbe, "SELECT * FROM subkey_names ORDER BY subkey")
    rc, out, err = run(capsys, "--import", str(f), "--dry-run", "--db", dbe)
    assert (rc, out) == (0, f"would import {f}: 2 inserted, 0 updated, 2 unchanged\n")
    assert err.splitlines() == warnings
    assert rows(dbe, "SELECT * FROM subkey_names ORDER BY subkey") == before
    rc, out, err = run(capsys, "--import", str(f), "--db", dbe)
    assert (rc, out) == (0, f"imported {f}: 2 inserted, 0 updated, 2 unchanged\n")
    assert err.splitlines() == warnings
    assert rows(dbe, "SELECT subkey, friendly_name FROM subkey_names WHERE friendly_name LIKE 'team bravo'"
                     " ORDER BY subkey") == [
        (SUBKEYS["charlie"], "team bravo"), (SUBKEYS["bravo"], "Team Bravo"), (SUBKEYS["zulu_unknown"], "Team Bravo")]
    # the same file again writes no name, so it warns no more
    rc, out, err = run(capsys, "--import", str(f), "--db", dbe)
    assert (rc, out, err) == (0, f"imported {f}: 0 inserted, 0 updated, 4 unchanged\n", "")


EMPTY_FILE_COMMANDS = [
    ["--migrate"],
    ["--migrate", "--dry-run"],
    ["--migrate", "--no-backup"],
    ["--add", "--subkey", "your_key", "--name", "User Name"],
    ["--remove", "--subkey", "your_key"],
    ["--import", "names.csv"],
    ["--import", "names.csv", "--dry-run"],
]


@pytest.mark.parametrize("argv", EMPTY_FILE_COMMANDS)
def test_write_commands_on_a_0_byte_file_refuse_and_leave_it_alone(tmp_path, capsys, argv):
    """`touch` with a typo leaves a 0-byte file: that is not the service's database, and is not migrated."""
    db = tmp_path / "quota.db"
    db.touch()
    (tmp_path / "names.csv").write_text("subkey,friendly_name\nyour_key,User Name\n", encoding="utf-8")
    argv = [str(tmp_path / a) if a == "names.csv" else a for a in argv]
    rc, out, err = run(capsys, *argv, "--db", str(db))
    assert (rc, out) == (2, "")
    assert err == (f"add_subkey_names_table.py: error: {db} is empty (0 bytes), so it is not the service's database"
                   f" (check --db); to create a new database there, run add_subkey_names_table.py --init --db {db}\n")
    assert db.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names.csv", "quota.db"]  # no backup, no journal


def test_init_on_a_0_byte_file_creates_the_table_without_a_backup(tmp_path, capsys):
    db = tmp_path / "quota.db"
    db.touch()
    rc, out, err = run(capsys, "--init", "--dry-run", "--db", str(db))
    assert (rc, err) == (0, "")
    assert [ln.split(":")[0] for ln in out.splitlines()] == ["would apply", "would apply"]  # and no backup
    assert db.stat().st_size == 0
    rc, out, err = run(capsys, "--init", "--db", str(db))
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        "applied: 0001_create_subkey_names (create table subkey_names)",
        "applied: 0003_subkey_names_friendly_name_index (create index idx_friendly_name on subkey_names(friendly_name))",
        f"{db}: schema is current",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quota.db"]  # an empty file has nothing to back up
    rc, out, err = run(capsys, "--migrate", "--db", str(db))  # a database now, no longer empty
    assert (rc, out, err) == (0, f"{db}: already up to date; nothing changed\n", "")


def test_add_the_guides_placeholder_subkey_is_saved_with_a_warning(dbe, capsys):
    rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", "your_key", "--name", "User Name",
                       "--email", "user@example.com")
    assert (rc, out) == (0, "inserted: your_key sha256:217f57bb0b160477 User Name <user@example.com>\n")
    assert err == (f"add_subkey_names_table.py: warning: subkey your_key sha256:217f57bb0b160477 has no usage in {dbe}"
                   " (no rows in usage or monthly_usage): a typo or a placeholder? The name was saved;"
                   " --remove takes it out\n")
    assert rows(dbe, "SELECT subkey, friendly_name, email FROM subkey_names WHERE subkey='your_key'") == [
        ("your_key", "User Name", "user@example.com")]
    rc, out, err = run(capsys, "--remove", "--db", dbe, "--subkey", "your_key")
    assert (rc, out, err) == (0, "removed: your_key sha256:217f57bb0b160477 User Name <user@example.com>\n", "")
    assert count(dbe, "subkey_names") == 5


def test_no_usage_warning_names_only_the_usage_tables_there_are(db9, capsys):
    rc, out, err = run(capsys, "--add", "--db", db9, "--subkey", "your_key", "--name", "User Name", "--no-backup")
    assert (rc, out) == (0, "inserted: your_key sha256:217f57bb0b160477 User Name\n")
    assert err.splitlines()[-1] == (
        f"add_subkey_names_table.py: warning: subkey your_key sha256:217f57bb0b160477 has no usage in {db9}"
        " (no rows in usage): a typo or a placeholder? The name was saved; --remove takes it out")
    assert [ln.split(":")[0] for ln in err.splitlines()] == ["migrated", "migrated", "add_subkey_names_table.py"]


def test_no_usage_warning_only_for_keys_without_usage_in_a_service_database(dbe, tmp_path, capsys):
    # a key with usage only in monthly_usage is used
    c = sqlite3.connect(dbe)
    c.execute("INSERT INTO monthly_usage(subkey, model, usage_month, requests) VALUES ('monthly_only_key', 'm', '2026-12', 1)")
    c.commit()
    c.close()
    rc, out, err = run(capsys, "--add", "--db", dbe, "--subkey", "monthly_only_key", "--name", "M")
    assert (rc, err) == (0, "")
    # a names-only database (--init): nothing to compare with, so nothing said
    db = str(tmp_path / "names-only.db")
    assert run(capsys, "--init", "--db", db)[0] == 0
    rc, out, err = run(capsys, "--add", "--db", db, "--subkey", "your_key", "--name", "User Name")
    assert (rc, out, err) == (0, "inserted: your_key sha256:217f57bb0b160477 User Name\n", "")
