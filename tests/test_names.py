"""oai_to_circuit.names, the library: migrations, backup, upsert, import, lookup, on real SQLite files."""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from journal_views import fixture
from oai_to_circuit import names
from oai_to_circuit.errors import InputError, ToolkitError
from oai_to_circuit.events import hash_subkey

FIX_E = fixture("service-e749b02")
SUBKEYS = FIX_E["subkeys"]



def dump(db, table):
    c = sqlite3.connect(db)
    try:
        return c.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    finally:
        c.close()


def tables(db):
    c = sqlite3.connect(db)
    try:
        return sorted(r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'"))
    finally:
        c.close()


def columns(db, table):
    c = sqlite3.connect(db)
    try:
        return [r[1] for r in c.execute(f"PRAGMA table_info({table})")]
    finally:
        c.close()


OLD_SCHEMA = """CREATE TABLE subkey_names (
    subkey TEXT PRIMARY KEY,
    friendly_name TEXT NOT NULL,
    description TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)"""


def make_pre_email_db(path):
    """A database whose subkey_names predates the email column, as early service versions made it."""
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE usage (subkey TEXT NOT NULL, model TEXT NOT NULL, requests INTEGER NOT NULL DEFAULT 0,"
              " prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,"
              " total_tokens INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (subkey, model))")
    c.execute("INSERT INTO usage VALUES (?, 'gpt-4o', 3, 10, 20, 30)", (SUBKEYS["alpha"],))
    c.execute(OLD_SCHEMA)
    c.executemany(
        "INSERT INTO subkey_names VALUES (?, ?, ?, ?, ?)",
        [
            (SUBKEYS["alpha"], "Team Alpha", "first team", "2025-06-01 09:00:00", "2025-06-02 10:00:00"),
            (SUBKEYS["bravo"], "Team Bravo", None, "2025-07-01 11:30:00", "2025-07-01 11:30:00"),
        ],
    )
    c.commit()
    c.close()
    return str(path)


# --------------------------------------------------------------------------- migrations


def test_migrate_creates_table_on_9c7664e_db_and_rerun_changes_nothing(db9):
    usage_before = dump(db9, "usage")
    assert len(usage_before) == 33
    assert tables(db9) == ["usage"]

    res = names.migrate(db9, timeout=0.5)

    assert res.applied == ["0001_create_subkey_names", "0003_subkey_names_friendly_name_index"]
    assert res.created_db is False
    assert res.backup_path is not None and Path(res.backup_path).exists()
    assert tables(db9) == ["_toolkit_migrations", "subkey_names", "usage"]
    assert columns(db9, "subkey_names") == [
        "subkey", "friendly_name", "email", "description", "created_at", "updated_at"]
    assert dump(db9, "usage") == usage_before  # same 33 rows, same values
    c = sqlite3.connect(db9)
    recorded = sorted(r[0] for r in c.execute("SELECT name FROM _toolkit_migrations"))
    assert recorded == ["0001_create_subkey_names", "0003_subkey_names_friendly_name_index"]
    assert names.schema_state(c) == "current"
    c.close()
    # the backup is the database as it was: usage only, every row
    assert tables(res.backup_path) == ["usage"]
    assert dump(res.backup_path, "usage") == usage_before

    mtime = os.stat(db9).st_mtime_ns
    again = names.migrate(db9, timeout=0.5)
    assert again.applied == [] and again.backup_path is None and not again.changed
    assert os.stat(db9).st_mtime_ns == mtime
    assert dump(db9, "usage") == usage_before


def test_migrate_on_current_db_writes_nothing_and_takes_no_backup(dbe, tmp_path):
    before = {t: dump(dbe, t) for t in ("usage", "monthly_usage", "key_lifecycle", "subkey_names")}
    res = names.migrate(dbe)
    assert res.applied == [] and res.backup_path is None
    assert tables(dbe) == ["key_lifecycle", "monthly_usage", "subkey_names", "usage"]  # no migrations table added
    assert {t: dump(dbe, t) for t in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quota.db"]


def test_migrate_adds_email_to_pre_email_table_keeping_rows_and_created_at(tmp_path):
    db = make_pre_email_db(tmp_path / "old.db")
    before = dump(db, "subkey_names")
    c = sqlite3.connect(db)
    assert names.schema_state(c) == "email_missing"
    c.close()

    res = names.migrate(db)

    assert res.applied == ["0002_subkey_names_email", "0003_subkey_names_friendly_name_index"]
    # the old column order stays; email is appended
    assert columns(db, "subkey_names") == [
        "subkey", "friendly_name", "description", "created_at", "updated_at", "email"]
    assert dump(db, "subkey_names") == [row + (None,) for row in before]
    rows = {r.subkey: r for r in names.list_names(db)[0]}
    assert rows[SUBKEYS["alpha"]].created_at == "2025-06-01 09:00:00"
    assert rows[SUBKEYS["alpha"]].updated_at == "2025-06-02 10:00:00"
    assert rows[SUBKEYS["bravo"]].created_at == "2025-07-01 11:30:00"
    assert dump(db, "usage") == [(SUBKEYS["alpha"], "gpt-4o", 3, 10, 20, 30)]
    assert names.migrate(db).applied == []


def test_failed_step_leaves_nothing_behind_and_stays_pending(db9):
    bad = names.Step(
        name="0099_bad",
        description="adds a column, then fails",
        needed=lambda c: "extra" not in names._columns(c, "subkey_names"),
        statements=["ALTER TABLE subkey_names ADD COLUMN extra TEXT", "SELECT * FROM no_such_table"],
    )
    steps = [names.MIGRATIONS[0], bad]
    with pytest.raises(names.NamesUnavailable, match="no such table: no_such_table"):
        names.migrate(db9, steps=steps, backup=False)
    # step 1 is in (with its record); the bad step left no column and no record
    assert "extra" not in columns(db9, "subkey_names")
    c = sqlite3.connect(db9)
    assert sorted(names.applied_migrations(c)) == ["0001_create_subkey_names"]
    assert [s.name for s in names.pending_steps(c, steps)] == ["0099_bad"]
    c.close()


BAD_STEP = names.Step(
    name="0099_bad",
    description="adds a column, then fails",
    needed=lambda c: "extra" not in names._columns(c, "subkey_names"),
    statements=["ALTER TABLE subkey_names ADD COLUMN extra TEXT", "SELECT * FROM no_such_table"],
)


def test_failed_first_step_removes_the_backup_it_took(db9, tmp_path):
    """Nothing changed, so the backup taken under the lock goes too: retries do not pile them up."""
    before = Path(db9).read_bytes()
    bad_first = names.Step("0000_bad", "fails", lambda c: True, ["SELECT * FROM no_such_table"])
    with pytest.raises(names.NamesUnavailable) as ei:
        names.migrate(db9, steps=[bad_first] + names.MIGRATIONS)
    assert str(ei.value) == f"{db9}: no such table: no_such_table"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quota.db"]
    assert Path(db9).read_bytes() == before


def test_failure_after_a_step_keeps_the_backup_and_says_where(db9, tmp_path):
    steps = [names.MIGRATIONS[0], BAD_STEP]
    with pytest.raises(names.NamesUnavailable) as ei:
        names.migrate(db9, steps=steps)
    backups = list(tmp_path.glob("quota.db.backup-*"))
    assert len(backups) == 1
    assert str(ei.value) == (f"{db9}: no such table: no_such_table (applied before the failure: "
                             f"0001_create_subkey_names; backup: {backups[0]})")
    assert tables(str(backups[0])) == ["usage"]  # the database as it was before step 1


def test_read_only_database_leaves_no_backup(db9, tmp_path, monkeypatch):
    """A user without write permission: SQLite opens the file read-only, and BEGIN IMMEDIATE still succeeds."""
    def connect_read_only(db_path, timeout=names.DEFAULT_TIMEOUT, create=False):
        return sqlite3.connect(names._ro_uri(db_path), uri=True, timeout=timeout, isolation_level=None), False

    monkeypatch.setattr(names, "connect_rw", connect_read_only)
    before = Path(db9).read_bytes()
    with pytest.raises(names.NamesUnavailable) as ei:
        names.migrate(db9)
    assert str(ei.value) == (f"{db9} is read-only for this user (attempt to write a readonly database): "
                             "run as the database's owner (e.g. with sudo)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quota.db"]
    assert Path(db9).read_bytes() == before


def test_migrate_creates_a_file_only_when_asked(tmp_path):
    db = str(tmp_path / "typo.db")
    for kw in ({}, {"dry_run": True}):
        with pytest.raises(names.NamesUnavailable) as ei:
            names.migrate(db, **kw)
        assert str(ei.value) == f"no database at {db} (create one with add_subkey_names_table.py --init --db {db})"
        assert not os.path.exists(db)
    res = names.migrate(db, create=True)
    assert res.created_db and res.backup_path is None and tables(db) == ["_toolkit_migrations", "subkey_names"]


def test_dry_run_reports_pending_steps_and_writes_nothing(db9, tmp_path):
    before = Path(db9).read_bytes()
    res = names.migrate(db9, dry_run=True)
    assert res.applied == ["0001_create_subkey_names", "0003_subkey_names_friendly_name_index"]
    assert Path(db9).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quota.db"]


# --------------------------------------------------------------------------- backup


def test_backup_under_a_wal_writer_has_every_committed_row(db9, tmp_path):
    w = sqlite3.connect(db9, isolation_level=None)
    assert w.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    w.execute("PRAGMA wal_autocheckpoint=0")  # keep the new rows in quota.db-wal only
    w.execute("BEGIN")
    for i in range(500):
        w.execute("INSERT INTO usage VALUES (?, 'gpt-4o', 1, 2, 3, 5)", (f"wal_key_{i:04d}",))
    w.execute("COMMIT")
    w.execute("BEGIN IMMEDIATE")  # the writer is mid-transaction while the backup runs
    w.execute("INSERT INTO usage VALUES ('uncommitted', 'gpt-4o', 1, 1, 1, 1)")

    # a plain copy of the main file alone misses what is only in the WAL: that is why cp is not a backup
    naive = tmp_path / "naive.db"
    shutil.copyfile(db9, naive)
    assert len(dump(str(naive), "usage")) == 33

    t0 = time.monotonic()
    dest = names.backup_database(db9, timeout=1)
    elapsed = time.monotonic() - t0

    w.execute("ROLLBACK")
    w.close()
    assert elapsed < 5  # readers are not blocked by a WAL writer (measured: milliseconds)
    assert oct(os.stat(dest).st_mode & 0o777) == "0o600"
    c = sqlite3.connect(dest)
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # a self-contained file
    assert c.execute("SELECT count(*) FROM usage").fetchone()[0] == 533
    assert c.execute("SELECT count(*) FROM usage WHERE subkey='uncommitted'").fetchone()[0] == 0
    c.close()


def test_backup_while_a_thread_keeps_committing_is_consistent(db9):
    w = sqlite3.connect(db9, isolation_level=None, check_same_thread=False)
    w.execute("PRAGMA journal_mode=WAL")
    stop = threading.Event()
    committed = []

    def writer():
        i = 0
        while not stop.is_set():
            w.execute("INSERT INTO usage VALUES (?, 'gpt-5', 1, 1, 1, 2)", (f"thr-{i:06d}",))
            committed.append(i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    while len(committed) < 200:
        time.sleep(0.005)
    before = len(committed)
    dest = names.backup_database(db9, timeout=2)
    after = len(committed)
    stop.set()
    t.join()
    w.close()
    c = sqlite3.connect(dest)
    n = c.execute("SELECT count(*) FROM usage WHERE substr(subkey, 1, 4) = 'thr-'").fetchone()[0]
    ids = [r[0] for r in c.execute("SELECT subkey FROM usage WHERE substr(subkey, 1, 4) = 'thr-' ORDER BY subkey")]
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    c.close()
    assert before <= n <= after
    assert ids == [f"thr-{i:06d}" for i in range(n)]  # a prefix of the commits: no gaps, no torn rows


# --------------------------------------------------------------------------- upsert / remove


def test_upsert_inserts_then_updates_only_given_fields(dbe):
    charlie = SUBKEYS["charlie"]
    r1 = names.upsert_name(dbe, charlie, "  Charlie Service ", " charlie@example.com ", "batch jobs")
    assert r1.action == "inserted"
    assert (r1.row.friendly_name, r1.row.email, r1.row.description) == (
        "Charlie Service", "charlie@example.com", "batch jobs")
    created = r1.row.created_at
    assert r1.row.updated_at == created

    r2 = names.upsert_name(dbe, charlie, name="Charlie Svc")
    assert r2.action == "updated" and r2.changed_fields == ("friendly_name",)
    assert (r2.row.friendly_name, r2.row.email, r2.row.description, r2.row.created_at) == (
        "Charlie Svc", "charlie@example.com", "batch jobs", created)

    r3 = names.upsert_name(dbe, charlie, name="Charlie Svc", email="charlie@example.com")
    assert r3.action == "unchanged"

    r4 = names.upsert_name(dbe, charlie, email="")
    assert r4.action == "updated" and r4.row.email is None and r4.row.description == "batch jobs"


def test_upsert_on_fixture_row_keeps_email_description_created_at(dbe):
    alpha = SUBKEYS["alpha"]
    res = names.upsert_name(dbe, alpha, name="Team Alpha (EMEA)")
    assert res.action == "updated"
    row = res.row
    assert row.friendly_name == "Team Alpha (EMEA)"
    assert row.email == "alpha-lead@example.com"
    assert row.description == "sample fixture"
    assert row.created_at == "2026-12-03 18:23:27"
    assert row.updated_at != "2026-12-03 18:23:27"
    assert names._parse_ts(row.updated_at) is not None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "X", "email": "not-an-email"}, "invalid email 'not-an-email': expected one address like user@example.com"),
        ({"name": "X", "email": "a@b"}, "invalid email 'a@b'"),
        ({"name": "   "}, "--name is empty"),
        ({}, "give --name (required for a new subkey), --email or --description"),
    ],
)
def test_upsert_refuses_bad_input_and_writes_nothing(dbe, kwargs, message):
    before = dump(dbe, "subkey_names")
    with pytest.raises(names.InvalidName, match=re.escape(message)):
        names.upsert_name(dbe, SUBKEYS["charlie"], **kwargs)
    assert dump(dbe, "subkey_names") == before


def test_upsert_new_subkey_without_name_is_refused(dbe):
    with pytest.raises(names.InvalidName, match="svc_char… has no name yet: --name is required"):
        names.upsert_name(dbe, SUBKEYS["charlie"], email="c@example.com")


def test_upsert_refuses_a_hash_as_subkey(dbe):
    with pytest.raises(names.InvalidName, match="is a sha256: form"):
        names.upsert_name(dbe, "sha256:dba1633cbab71a89", "Charlie")


def test_upsert_migrates_a_pre_email_table_first(tmp_path):
    db = make_pre_email_db(tmp_path / "old.db")
    res = names.upsert_name(db, SUBKEYS["alpha"], email="alpha@example.com")
    assert res.action == "updated"
    assert res.row.created_at == "2025-06-01 09:00:00" and res.row.description == "first team"
    assert "email" in columns(db, "subkey_names")
    assert len(list(tmp_path.glob("old.db.backup-*"))) == 1


def test_remove_absent_subkey_raises_not_found_exit_1(dbe):
    with pytest.raises(names.SubkeyNotFound) as ei:
        names.remove_name(dbe, SUBKEYS["charlie"])
    assert ei.value.exit_code == 1
    assert str(ei.value) == f"no name for subkey svc_char… in {dbe}; nothing removed"


# --------------------------------------------------------------------------- import


def write(path, text):
    Path(path).write_text(text, encoding="utf-8")
    return str(path)


def test_import_counts_and_is_one_transaction(dbe, tmp_path):
    csv_path = write(tmp_path / "names.csv",
                     "subkey,friendly_name,email,description\n"
                     f"{SUBKEYS['charlie']},Charlie Service,charlie@example.com,batch\n"   # inserted
                     f"{SUBKEYS['bravo']},Team Bravo,bravo@example.com,\n"                 # updated (email)
                     f"{SUBKEYS['alpha']},Team Alpha,,\n")                                 # unchanged
    res = names.import_csv(dbe, csv_path)
    assert (res.inserted, res.updated, res.unchanged) == (1, 1, 1)
    rows = {r.subkey: r for r in names.list_names(dbe)[0]}
    assert len(rows) == 6
    assert rows[SUBKEYS["bravo"]].email == "bravo@example.com"
    assert rows[SUBKEYS["bravo"]].description == "no email on file"  # empty cell keeps it
    assert rows[SUBKEYS["alpha"]].email == "alpha-lead@example.com"
    assert rows[SUBKEYS["alpha"]].updated_at == "2026-12-03 18:23:27"


def test_import_validates_every_row_before_writing(dbe, tmp_path):
    before = dump(dbe, "subkey_names")
    csv_path = write(tmp_path / "bad.csv",
                     "subkey,friendly_name,email\n"
                     f"{SUBKEYS['charlie']},Charlie,charlie@example.com\n"
                     f"{SUBKEYS['zulu_unknown']},Zulu,zulu-at-example.com\n"
                     f"{SUBKEYS['charlie']},Charlie again,\n"
                     ",No Key,\n")
    with pytest.raises(InputError) as ei:
        names.import_csv(dbe, csv_path)
    assert str(ei.value) == (
        f"--import {csv_path}: line 3: invalid email 'zulu-at-example.com': expected one address like "
        "user@example.com (and 2 more: lines 4, 5); nothing was written")
    assert dump(dbe, "subkey_names") == before


def test_import_error_with_one_other_bad_line(dbe, tmp_path):
    csv_path = write(tmp_path / "bad.csv",
                     "subkey,friendly_name\n"
                     f"{SUBKEYS['charlie']},\n"
                     f"{SUBKEYS['charlie']},Charlie\n"
                     f"{SUBKEYS['alpha']},\n")
    with pytest.raises(InputError) as ei:
        names.import_csv(dbe, csv_path)
    assert str(ei.value) == f"--import {csv_path}: line 2: friendly_name is empty (and 1 more: line 4); nothing was written"


def test_import_needs_a_header(dbe, tmp_path):
    csv_path = write(tmp_path / "nohdr.csv", f"{SUBKEYS['charlie']},Charlie,charlie@example.com\n")
    with pytest.raises(InputError, match="bad header"):
        names.import_csv(dbe, csv_path)


def test_export_then_import_round_trips_unchanged(dbe, tmp_path):
    out = tmp_path / "names.csv"
    text, n = names.export_names(dbe, "csv", str(out))
    assert (text, n) == ("", 5)
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    res = names.import_csv(dbe, str(out))
    assert (res.inserted, res.updated, res.unchanged) == (0, 0, 5)


# --------------------------------------------------------------------------- lookup (the backfill's contract)


def test_name_lookup_keys_raw_and_hashed_forms(dbe):
    lookup = names.name_lookup(dbe)
    assert len(lookup) == 10  # 5 names x (raw, sha256:)
    for label, (fname, email, desc) in FIX_E["names"].items():
        raw = SUBKEYS[label]
        expected = names.Name(fname, email or None, desc)
        assert lookup[raw] == expected
        assert lookup[FIX_E["subkey_sha256_16"][label]] == expected
    assert lookup[SUBKEYS["bravo"]].email is None  # "" in the database
    assert SUBKEYS["charlie"] not in lookup


def test_name_lookup_without_email_column(tmp_path):
    db = make_pre_email_db(tmp_path / "old.db")
    before = Path(db).read_bytes()
    lookup = names.name_lookup(db)
    assert lookup[hash_subkey(SUBKEYS["alpha"])] == names.Name("Team Alpha", None, "first team")
    assert Path(db).read_bytes() == before  # read-only: nothing migrated


def test_name_lookup_errors(tmp_path, db9):
    missing = tmp_path / "nope.db"
    with pytest.raises(names.NamesUnavailable, match=f"^no database at {missing}$"):
        names.name_lookup(str(missing))
    assert not missing.exists()
    with pytest.raises(names.NamesUnavailable) as ei:
        names.name_lookup(db9)
    assert str(ei.value) == f"{db9} has no subkey_names table (run add_subkey_names_table.py --migrate)"
    junk = write(tmp_path / "junk.db", "this is not sqlite at all, just text " * 50)
    with pytest.raises(names.NamesUnavailable, match=f"^{junk} is not a SQLite database$"):
        names.name_lookup(junk)
    assert issubclass(names.NamesUnavailable, ToolkitError)


def test_name_lookup_reports_locked_not_empty(dbe):
    h = sqlite3.connect(dbe, isolation_level=None)
    h.execute("BEGIN EXCLUSIVE")  # rollback-journal commit in progress: readers must wait
    t0 = time.monotonic()
    with pytest.raises(names.DatabaseLocked, match="database is locked"):
        names.name_lookup(dbe, timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 2
    h.execute("ROLLBACK")
    h.close()
    assert len(names.name_lookup(dbe)) == 10


# --------------------------------------------------------------------------- interactive


def test_interactive_setup_saves_answers_from_input_fn(dbe):
    answers = iter(["Charlie Service", "bad-email", "charlie@example.com"])
    prompts = []

    def fake_input(prompt):
        prompts.append(prompt)
        return next(answers)

    import io
    err = io.StringIO()
    saved = names.interactive_setup(dbe, input_fn=fake_input, err=err)
    assert saved == 1
    assert prompts == [
        "name for svc_char… sha256:dba1633cbab71a89 (75 requests; empty = skip): ",
        "email for Charlie Service (empty = none): ",
        "email for Charlie Service (empty = none): ",
    ]
    assert err.getvalue().splitlines() == [
        "invalid email 'bad-email': expected one address like user@example.com",
        "saved: svc_char… sha256:dba1633cbab71a89 Charlie Service <charlie@example.com>",
    ]
    assert names.name_lookup(dbe)[SUBKEYS["charlie"]] == names.Name("Charlie Service", "charlie@example.com", None)


# --------------------------------------------------------------------------- operator trial: clashes, empty file, no usage


def test_name_clash_warning_trimmed_case_insensitive_others_only():
    stored = {"k_one_aaaaaaaa": "Team Alpha", "k_two_bbbbbbbb": " team ALPHA ", "k_three_cccc": "Équipe Écho"}
    assert names.name_clash_warning("k_one_aaaaaaaa", "Team Alpha", {"k_one_aaaaaaaa": "Team Alpha"}) is None
    assert names.name_clash_warning("k_new_dddddddd", "Team Beta", stored) is None
    assert names.name_clash_warning("k_new_dddddddd", "Team Alpha", stored) == (
        f"friendly name 'Team Alpha' of k_new_dd… {hash_subkey('k_new_dddddddd')} is also the name of "
        f"k_one_aa… {hash_subkey('k_one_aaaaaaaa')}, k_two_bb… {hash_subkey('k_two_bbbbbbbb')} (as ' team ALPHA '): "
        "Splunk and the check tell them apart only by sha256")
    assert names.name_clash_warning("k_new_dddddddd", "ÉQUIPE ÉCHO", stored).startswith(
        f"friendly name 'ÉQUIPE ÉCHO' of k_new_dd… {hash_subkey('k_new_dddddddd')} is also the name of k_three_… ")


def test_upsert_returns_the_clash_and_writes_the_row(dbe):
    res = names.upsert_name(dbe, SUBKEYS["charlie"], "team alpha")
    assert res.action == "inserted" and res.name_written
    assert res.warnings == [
        "friendly name 'team alpha' of svc_char… sha256:dba1633cbab71a89 is also the name of team_alp… "
        "sha256:0396fdc82504f0cc (as 'Team Alpha'): Splunk and the check tell them apart only by sha256"]
    assert names.name_lookup(dbe)[SUBKEYS["charlie"]].friendly_name == "team alpha"
    assert names.upsert_name(dbe, SUBKEYS["charlie"], email="c@example.com").warnings == []


def test_migrate_refuses_a_0_byte_file_unless_init(tmp_path):
    db = tmp_path / "quota.db"
    db.touch()
    message = (f"{db} is empty (0 bytes), so it is not the service's database (check --db); "
               f"to create a new database there, run add_subkey_names_table.py --init --db {db}")
    for kw in ({}, {"dry_run": True}):
        with pytest.raises(names.NamesUnavailable) as ei:
            names.migrate(str(db), **kw)
        assert (str(ei.value), ei.value.exit_code) == (message, 2)
    for call in (lambda: names.upsert_name(str(db), "your_key", "N"),
                 lambda: names.remove_name(str(db), "your_key")):
        with pytest.raises(names.NamesUnavailable) as ei:
            call()
        assert str(ei.value) == message
    assert db.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["quota.db"]
    res = names.migrate(str(db), create=True)
    assert (res.created_db, res.was_empty, res.backup_path) == (False, True, None)
    assert tables(str(db)) == ["_toolkit_migrations", "subkey_names"]


def test_usage_warning_is_advisory_and_never_waits_long(dbe):
    assert names.usage_warning(dbe, SUBKEYS["charlie"]) is None
    assert names.usage_warning(dbe, "your_key") == (
        f"subkey your_key sha256:217f57bb0b160477 has no usage in {dbe} (no rows in usage or monthly_usage): "
        "a typo or a placeholder? The name was saved; --remove takes it out")
    holder = sqlite3.connect(dbe, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # rollback-journal mode: even readers wait
    try:
        t0 = time.monotonic()
        assert names.usage_warning(dbe, "your_key", timeout=0.2) is None  # could not look: says nothing
        assert time.monotonic() - t0 < 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
