"""subkey_names: schema migrations, upsert, list, remove, import/export, lookup, and the check.

The service (oai-to-circuit) keeps ``quota.db`` open and writes to it on every request, so
everything here is written for a database somebody else is writing to:

* reads open the file read-only (URI ``mode=ro``): they never create it and never block the
  service; they wait at most ``timeout`` seconds for a commit in progress;
* writes use a busy timeout (default 10 s) and ``BEGIN IMMEDIATE``, so a write either gets the
  lock up front or stops with one line saying the database is locked - never half-way;
* migrations are an ordered list of small idempotent steps; each runs in its own transaction
  together with its row in ``_toolkit_migrations``, so a failed step leaves nothing behind and
  stays pending; the service's tables (usage, monthly_usage, key_lifecycle) are never touched;
* a migration that changes anything first takes a backup with SQLite's backup API (consistent
  under a writing service, WAL included), once it holds the write lock, so a locked database
  leaves no backup behind; a backup of a migration that then changed nothing is removed;
* only --init creates a database file, or makes one of a 0-byte file: a mistyped --db must not
  become a new empty quota.db;
* a name another subkey has, or a subkey without usage, is saved with a warning, never refused.

The library raises :class:`~oai_to_circuit.errors.ToolkitError` subclasses; only a script's
``main()`` turns them into one line on stderr and an exit code.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import sqlite3
import sys
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, TextIO
from urllib.parse import quote

from .errors import InputError, ToolkitError
from .events import hash_subkey, is_hashed

DEFAULT_TIMEOUT = 10.0
TABLE = "subkey_names"
MIGRATIONS_TABLE = "_toolkit_migrations"
SERVICE_TABLES = ("usage", "monthly_usage", "key_lifecycle")
STOP_SERVICE = "sudo systemctl stop oai-to-circuit"
MIGRATE_HINT = "run add_subkey_names_table.py --migrate"
NOT_SERVICE_DB = "it has no usage or monthly_usage table"
MANAGE_PROG = "add_subkey_names_table.py"  # the scripts' names, for their warning lines
CHECK_PROG = "check_and_setup_names.py"
USAGE_CHECK_TIMEOUT = 2.0  # the advisory after --add waits at most this long for a read, then says nothing
ELLIPSIS_TABLE = "\u2026"  # shown in tables (one column wide)
ELLIPSIS_ASCII = "..."  # used in csv/json, which stay plain ASCII around the data
SHORT_LEN = 8
IMPORT_COLUMNS = ("subkey", "friendly_name", "email", "description")
EXPORT_COLUMNS = IMPORT_COLUMNS + ("subkey_sha256", "created_at", "updated_at")
EMAIL_RE = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"'.][^@\s<>,;\"']*$")


# --------------------------------------------------------------------------- errors


class NamesError(ToolkitError):
    """Base of this module's errors (exit 2 unless stated)."""


class NamesUnavailable(NamesError):
    """The database cannot be used: missing, not SQLite, no subkey_names table, locked, read-only."""


class NoNamesTable(NamesUnavailable):
    """A readable database that predates subkey_names: the backfill warns and goes on without names."""


class DatabaseLocked(NamesUnavailable):
    """Another connection (normally the running service) holds the lock past the timeout."""


class InvalidName(NamesError):
    """A subkey, name or email given by the user is not acceptable (nothing was written)."""


class SubkeyNotFound(NamesError):
    """--remove of a subkey that has no name (exit 1)."""

    exit_code = 1


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Name:
    friendly_name: str
    email: Optional[str]  # None or "" normalised to None
    description: Optional[str]


@dataclass(frozen=True)
class NameRow:
    subkey: str
    friendly_name: str
    email: Optional[str]
    description: Optional[str]
    created_at: Optional[str]
    updated_at: Optional[str]

    @property
    def subkey_sha256(self) -> str:
        return hash_subkey(self.subkey)


@dataclass(frozen=True)
class Step:
    """One migration step: ``needed(conn)`` says whether the schema lacks it; ``statements`` add it."""

    name: str
    description: str
    needed: Callable[[sqlite3.Connection], bool]
    statements: Sequence[str]


@dataclass
class MigrationResult:
    db_path: str
    created_db: bool = False
    applied: list = field(default_factory=list)  # step names applied (or that would be, dry run)
    backup_path: Optional[str] = None
    dry_run: bool = False
    was_empty: bool = False  # --init on an existing 0-byte file: nothing to back up

    @property
    def changed(self) -> bool:
        return bool(self.applied) or self.created_db


@dataclass
class UpsertResult:
    action: str  # inserted | updated | unchanged
    row: NameRow
    changed_fields: tuple = ()
    warnings: list = field(default_factory=list)  # one line each, without the "<script>: warning: " prefix

    @property
    def name_written(self) -> bool:
        return self.action == "inserted" or "friendly_name" in self.changed_fields


@dataclass
class ImportResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    dry_run: bool = False
    warnings: list = field(default_factory=list)  # one line each, without the "<script>: warning: " prefix


# --------------------------------------------------------------------------- small helpers


def _norm(value: Optional[str]) -> Optional[str]:
    """Trim; empty -> None."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def shorten(subkey: str, ascii_only: bool = False) -> str:
    """First 8 characters + an ellipsis ("..." when ``ascii_only``); subkeys are secrets."""
    if len(subkey) <= SHORT_LEN:
        return subkey
    return subkey[:SHORT_LEN] + (ELLIPSIS_ASCII if ascii_only else ELLIPSIS_TABLE)


def _now_utc() -> str:
    """The format SQLite's CURRENT_TIMESTAMP uses (UTC), so old and new rows compare and sort alike."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _parse_ts(ts: Optional[str]) -> Optional[datetime]:
    if not ts:
        return None
    s = str(ts).strip().replace("T", " ")
    if s.endswith("Z"):
        s = s[:-1]
    s = s.split("+")[0]
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(s, fmt)
        except ValueError:
            continue
    return None


def format_utc(ts: Optional[str], iso: bool = False) -> str:
    """Stored timestamps are UTC: show ``2026-12-03 18:23:27 UTC`` (tables) or ``2026-12-03T18:23:27Z``."""
    d = _parse_ts(ts)
    if d is None:
        return ts or ("" if iso else "-")
    return d.strftime("%Y-%m-%dT%H:%M:%SZ") if iso else d.strftime("%Y-%m-%d %H:%M:%S UTC")


def _sort_key(name: str) -> tuple:
    """Accent- and case-insensitive, so "Équipe Écho" sorts with the E's."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return (folded.casefold(), name)


def validate_subkey(subkey: Optional[str]) -> str:
    s = (subkey or "").strip()
    if not s:
        raise InvalidName("--subkey is empty")
    if is_hashed(s):
        raise InvalidName(f"--subkey {s} is a sha256: form; names are stored under the raw subkey")
    if any(c.isspace() for c in s):
        raise InvalidName(f"--subkey {shorten(s)} contains whitespace")
    return s


def validate_email(email: str) -> str:
    e = email.strip()
    if not EMAIL_RE.match(e):
        raise InvalidName(f"invalid email {email.strip()!r}: expected one address like user@example.com")
    return e


def validate_name(name: str) -> str:
    n = name.strip()
    if not n:
        raise InvalidName("--name is empty")
    if any(unicodedata.category(c) == "Cc" for c in n):
        raise InvalidName(f"--name {n!r} contains control characters")
    return n


# --------------------------------------------------------------------------- connections


def _is_locked(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in str(exc)


def _locked(db_path: str, timeout: float, writing: bool) -> DatabaseLocked:
    what = "to write" if writing else "to read"
    return DatabaseLocked(
        f"{db_path}: database is locked (waited {timeout:g} s {what}; another process, normally the "
        f"running service, holds the lock): stop it with `{STOP_SERVICE}` and retry, or raise --timeout"
    )


def _translate(exc: sqlite3.Error, db_path: str, timeout: float, writing: bool) -> NamesError:
    """sqlite3 errors -> one actionable line."""
    if _is_locked(exc):
        return _locked(db_path, timeout, writing)
    msg = str(exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    if "file is not a database" in msg or name == "SQLITE_NOTADB":
        return NamesUnavailable(f"{db_path} is not a SQLite database")
    if name.startswith("SQLITE_READONLY") or "readonly" in msg:
        return NamesUnavailable(
            f"{db_path} is read-only for this user (attempt to write a readonly database): "
            f"run as the database's owner (e.g. with sudo)"
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in msg:
        return NamesUnavailable(f"{db_path}: unable to open the database file (check the file and its directory permissions)")
    if "disk is full" in msg or name == "SQLITE_FULL":
        return NamesUnavailable(f"{db_path}: disk is full")
    return NamesUnavailable(f"{db_path}: {msg}")


def _check_file(db_path: str) -> None:
    p = Path(db_path)
    if p.is_dir():
        raise NamesUnavailable(f"{db_path} is a directory, not a SQLite database")
    if not p.exists():
        if not p.parent.exists():
            raise NamesUnavailable(f"no database at {db_path} (directory {p.parent} does not exist)")
        raise NamesUnavailable(f"no database at {db_path}")


def _no_database(db_path: str) -> NamesUnavailable:
    """A write on a missing file: point at --init, unless its directory is missing too (--init would fail)."""
    parent = Path(db_path).parent
    if not parent.is_dir():
        return NamesUnavailable(f"no database at {db_path} (directory {parent} does not exist)")
    return NamesUnavailable(
        f"no database at {db_path} (create one with add_subkey_names_table.py --init --db {shlex.quote(db_path)})")


def is_empty_file(db_path: str) -> bool:
    """0 bytes and no -wal content. (A live WAL database is never 0 bytes: switching to WAL writes the header.)"""
    try:
        return (os.path.isfile(db_path) and os.path.getsize(db_path) == 0
                and not (os.path.isfile(db_path + "-wal") and os.path.getsize(db_path + "-wal") > 0))
    except OSError:
        return False  # whatever it is, opening it says so


def _refuse_empty(db_path: str) -> None:
    """A 0-byte file (what ``touch`` with a typo leaves) is not the service's database: only --init
    may turn it into one."""
    if not is_empty_file(db_path):
        return
    raise NamesUnavailable(
        f"{db_path} is empty (0 bytes), so it is not the service's database (check --db); "
        f"to create a new database there, run add_subkey_names_table.py --init --db {shlex.quote(db_path)}")


def _ro_uri(db_path: str) -> str:
    return "file:" + quote(os.path.abspath(db_path)) + "?mode=ro"


def connect_ro(db_path: str, timeout: float = DEFAULT_TIMEOUT) -> sqlite3.Connection:
    """Open read-only; never creates the file. Raises NamesUnavailable."""
    _check_file(db_path)
    try:
        conn = sqlite3.connect(_ro_uri(db_path), uri=True, timeout=timeout, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # NOTADB shows up here
    except sqlite3.Error as exc:
        raise _translate(exc, db_path, timeout, writing=False) from None
    return conn


def connect_rw(db_path: str, timeout: float = DEFAULT_TIMEOUT, create: bool = False) -> tuple[sqlite3.Connection, bool]:
    """Open for writing (autocommit; callers BEGIN IMMEDIATE). Returns (conn, created).

    Only ``create=True`` (--init) may create the file, and only in an existing directory.
    """
    p = Path(db_path)
    created = False
    if p.is_dir():
        raise NamesUnavailable(f"{db_path} is a directory, not a SQLite database")
    if not p.exists():
        if not create:
            raise _no_database(db_path)
        if not p.parent.is_dir():
            raise NamesUnavailable(f"cannot create {db_path}: directory {p.parent} does not exist")
        try:
            fd = os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise NamesUnavailable(f"cannot create {db_path}: {exc.strerror}") from None
        else:
            created = True
    try:
        conn = sqlite3.connect(db_path, timeout=timeout, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise _translate(exc, db_path, timeout, writing=True) from None
    return conn, created


class _WriteTxn:
    """``with _WriteTxn(conn, path, timeout):`` = BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""

    def __init__(self, conn: sqlite3.Connection, db_path: str, timeout: float):
        self.conn, self.db_path, self.timeout = conn, db_path, timeout

    def __enter__(self):
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc, self.db_path, self.timeout, writing=True) from None
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return False
            except sqlite3.Error as cexc:
                self._rollback()
                raise _translate(cexc, self.db_path, self.timeout, writing=True) from None
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise _translate(exc, self.db_path, self.timeout, writing=True) from None
        return False

    def _rollback(self):
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# --------------------------------------------------------------------------- schema


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _columns(conn: sqlite3.Connection, table: str) -> list:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _has_friendly_name_index(conn: sqlite3.Connection) -> bool:
    for row in conn.execute(f"PRAGMA index_list({TABLE})"):
        cols = [r[2] for r in conn.execute(f"PRAGMA index_info({_quote_ident(row[1])})")]
        if cols[:1] == ["friendly_name"]:
            return True
    return False


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


CREATE_TABLE_SQL = """CREATE TABLE IF NOT EXISTS subkey_names (
    subkey TEXT PRIMARY KEY,
    friendly_name TEXT NOT NULL,
    email TEXT,
    description TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)"""

MIGRATIONS: list = [
    Step(
        name="0001_create_subkey_names",
        description="create table subkey_names",
        needed=lambda c: not _table_exists(c, TABLE),
        statements=[CREATE_TABLE_SQL],
    ),
    Step(
        name="0002_subkey_names_email",
        description="add column subkey_names.email",
        needed=lambda c: _table_exists(c, TABLE) and "email" not in _columns(c, TABLE),
        statements=["ALTER TABLE subkey_names ADD COLUMN email TEXT"],
    ),
    Step(
        name="0003_subkey_names_friendly_name_index",
        description="create index idx_friendly_name on subkey_names(friendly_name)",
        needed=lambda c: not _table_exists(c, TABLE) or not _has_friendly_name_index(c),
        statements=["CREATE INDEX IF NOT EXISTS idx_friendly_name ON subkey_names(friendly_name)"],
    ),
]

_STATE_BY_STEP = {
    "0001_create_subkey_names": "table_missing",
    "0002_subkey_names_email": "email_missing",
    "0003_subkey_names_friendly_name_index": "index_missing",
}
SCHEMA_STATE_TEXT = {
    "current": "current",
    "table_missing": "subkey_names table missing",
    "email_missing": "subkey_names has no email column",
    "index_missing": "friendly_name index missing",
}


def pending_steps(conn: sqlite3.Connection, steps: Sequence[Step] = MIGRATIONS) -> list:
    """Steps whose effect the schema lacks, in order.

    Each ``needed`` answers for the schema as it will be once the earlier steps have run (a table
    created by step 1 already has ``email``; it does not have the index), so this is one pass.
    """
    return [s for s in steps if s.needed(conn)]


def schema_state(conn: sqlite3.Connection) -> str:
    """'current' | 'table_missing' | 'email_missing' | 'index_missing' (the first missing piece)."""
    pend = pending_steps(conn)
    return _STATE_BY_STEP.get(pend[0].name, "current") if pend else "current"


def applied_migrations(conn: sqlite3.Connection) -> dict:
    if not _table_exists(conn, MIGRATIONS_TABLE):
        return {}
    return dict(conn.execute(f"SELECT name, applied_at FROM {MIGRATIONS_TABLE}"))


def _apply_step(conn: sqlite3.Connection, step: Step, db_path: str, timeout: float,
                backup_into: Optional[MigrationResult] = None) -> bool:
    """Apply one step in its own IMMEDIATE transaction with its record. False if it was no longer needed.

    ``backup_into``: take the backup first if it has none yet - under the write lock, so a lock we
    never get leaves no backup, and no other writer commits between the backup and the step.
    """
    with _WriteTxn(conn, db_path, timeout):
        if not step.needed(conn):  # re-checked under the lock: the service may have done it meanwhile
            return False
        if backup_into is not None and backup_into.backup_path is None:
            backup_into.backup_path = backup_database(db_path, timeout=timeout)
        for sql in step.statements:
            conn.execute(sql)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        conn.execute(
            f"INSERT OR REPLACE INTO {MIGRATIONS_TABLE}(name, applied_at) VALUES (?, ?)", (step.name, _now_utc())
        )
    return True


def backup_database(db_path: str, dest: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Consistent copy of ``db_path`` via SQLite's backup API (WAL content included), mode 0600.

    The copy is a single self-contained file (rollback journal mode) next to the database, named
    ``<db>.backup-YYYYmmddTHHMMSSZ``. Returns its path.
    """
    if dest is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base = f"{db_path}.backup-{stamp}"
        dest, n = base, 1
        while os.path.exists(dest):
            dest, n = f"{base}-{n}", n + 1
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except OSError as exc:
        raise NamesUnavailable(f"cannot create backup {dest}: {exc.strerror}") from None
    src = connect_ro(db_path, timeout)
    try:
        dst = sqlite3.connect(dest, isolation_level=None)
        try:
            src.backup(dst)  # pages=-1: one step, under one read transaction: a consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as exc:
        _unlink_quietly(dest)
        raise _translate(exc, db_path, timeout, writing=False) from None
    except BaseException:
        _unlink_quietly(dest)
        raise
    finally:
        src.close()
    if check != "ok":
        _unlink_quietly(dest)  # a copy that fails its check is no backup
        raise NamesUnavailable(f"backup {dest} failed its integrity check ({check}); nothing was migrated")
    return dest


def _unlink_quietly(path: str) -> None:
    for p in (path, path + "-journal", path + "-wal", path + "-shm"):
        try:
            os.unlink(p)
        except OSError:
            pass


def migrate(
    db_path: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    dry_run: bool = False,
    backup: bool = True,
    create: bool = False,
    steps: Sequence[Step] = MIGRATIONS,
) -> MigrationResult:
    """Apply the pending steps, each in its own transaction with its record; back up first if any.

    ``create`` (--init only): a missing database file may be created (only in an existing directory),
    and an existing 0-byte file becomes a database; otherwise both are refused, so a mistyped path
    never becomes a new empty database.
    """
    result = MigrationResult(db_path=db_path, dry_run=dry_run)
    if not create:
        _refuse_empty(db_path)
    result.was_empty = is_empty_file(db_path)
    if dry_run:
        if not os.path.exists(db_path):
            if not create:
                raise _no_database(db_path)
            if not Path(db_path).parent.is_dir():
                raise NamesUnavailable(f"cannot create {db_path}: directory {Path(db_path).parent} does not exist")
            result.created_db = True
            empty = sqlite3.connect(":memory:")  # what a brand-new file would need
            try:
                result.applied = [s.name for s in pending_steps(empty, steps)]
            finally:
                empty.close()
            return result
        conn = connect_ro(db_path, timeout)
        try:
            result.applied = [s.name for s in pending_steps(conn, steps)]
        except sqlite3.Error as exc:
            raise _translate(exc, db_path, timeout, writing=False) from None
        finally:
            conn.close()
        return result

    conn, created = connect_rw(db_path, timeout, create=create)
    result.created_db = created
    backup = backup and not created and not result.was_empty  # an empty file has nothing to keep
    try:
        try:
            pend = pending_steps(conn, steps)
        except sqlite3.Error as exc:
            raise _translate(exc, db_path, timeout, writing=False) from None
        for step in pend:
            if _apply_step(conn, step, db_path, timeout, result if backup else None):
                result.applied.append(step.name)
    except BaseException as exc:
        if result.backup_path and not result.applied:  # nothing changed: the backup would only pile up
            _unlink_quietly(result.backup_path)
            result.backup_path = None
        if result.backup_path and isinstance(exc, NamesError):  # half-way: the backup stays; say where
            raise type(exc)(f"{exc} (applied before the failure: {', '.join(result.applied)}; "
                            f"backup: {result.backup_path})") from None
        raise
    finally:
        conn.close()
    return result


def _ensure_current(db_path: str, timeout: float, backup: bool, err: Optional[TextIO]) -> None:
    """Write commands migrate first (with backup) when the schema is behind, and say so on ``err``."""
    res = migrate(db_path, timeout=timeout, backup=backup, create=False)
    if res.applied and err is not None:
        if res.backup_path:
            print(f"backup: {res.backup_path}", file=err)
        for name in res.applied:
            print(f"migrated: {_describe(name)}", file=err)


def _describe(step_name: str) -> str:
    for s in MIGRATIONS:
        if s.name == step_name:
            return f"{s.name} ({s.description})"
    return step_name


# --------------------------------------------------------------------------- reading


def _read_rows(conn: sqlite3.Connection) -> list:
    cols = _columns(conn, TABLE)
    sel = ", ".join(c if c in cols else f"NULL AS {c}" for c in
                    ("subkey", "friendly_name", "email", "description", "created_at", "updated_at"))
    rows = [NameRow(*r) for r in conn.execute(f"SELECT {sel} FROM {TABLE}")]
    rows.sort(key=lambda r: (_sort_key(r.friendly_name or ""), r.subkey))
    return rows


def list_names(db_path: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[list, str]:
    """(rows sorted by friendly_name, schema state). Read-only. Raises NamesUnavailable."""
    _refuse_empty(db_path)  # not "no table (run --migrate)": --migrate refuses it too
    conn = connect_ro(db_path, timeout)
    try:
        if not _table_exists(conn, TABLE):
            raise NoNamesTable(f"{db_path} has no {TABLE} table ({MIGRATE_HINT})")
        return _read_rows(conn), schema_state(conn)
    except sqlite3.Error as exc:
        raise _translate(exc, db_path, timeout, writing=False) from None
    finally:
        conn.close()


def name_lookup(db_path: str, *, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Read-only (URI mode=ro; works while the service writes; never creates the file).

    Keys: every raw subkey AND its hash_subkey() form, so callers look up either. A table without
    the email column still works (email None). Raises NamesUnavailable.
    """
    rows, _state = list_names(db_path, timeout)
    out: dict = {}
    for r in rows:
        name = Name(friendly_name=r.friendly_name, email=_norm(r.email), description=_norm(r.description))
        out[r.subkey] = name
        out[hash_subkey(r.subkey)] = name
    return out


# --------------------------------------------------------------------------- writing


def _get_row(conn: sqlite3.Connection, subkey: str) -> Optional[NameRow]:
    r = conn.execute(
        f"SELECT subkey, friendly_name, email, description, created_at, updated_at FROM {TABLE} WHERE subkey=?",
        (subkey,),
    ).fetchone()
    return NameRow(*r) if r else None


def _fold_name(name: Optional[str]) -> str:
    """Names compared the way a reader of Splunk or the check would: trimmed, case-insensitive."""
    return unicodedata.normalize("NFKC", (name or "").strip()).casefold()


def name_clash_warning(subkey: str, name: str, names_by_subkey: dict) -> Optional[str]:
    """One line when other subkeys already have ``name`` (trimmed, case-insensitive), else None.

    Two keys of one team may share a name, so this warns and never refuses.
    """
    folded = _fold_name(name)
    others = sorted(sk for sk, n in names_by_subkey.items() if sk != subkey and _fold_name(n) == folded)
    if not others:
        return None
    named = ", ".join(
        f"{shorten(sk)} {hash_subkey(sk)}" + (f" (as {names_by_subkey[sk]!r})" if names_by_subkey[sk] != name else "")
        for sk in others)
    return (f"friendly name {name!r} of {shorten(subkey)} {hash_subkey(subkey)} is also the name of {named}: "
            f"Splunk and the check tell them apart only by sha256")


def _names_by_subkey(conn: sqlite3.Connection) -> dict:
    return dict(conn.execute(f"SELECT subkey, friendly_name FROM {TABLE}"))


def usage_warning(db_path: str, subkey: str, timeout: float = DEFAULT_TIMEOUT) -> Optional[str]:
    """After a committed --add: one line when the service's usage tables exist and none has ``subkey``.

    Read-only and advisory: it waits at most USAGE_CHECK_TIMEOUT, and says nothing when the file has
    no usage tables (not the service's database) or cannot be read right now.
    """
    try:
        conn = connect_ro(db_path, min(timeout, USAGE_CHECK_TIMEOUT))
    except NamesError:
        return None
    try:
        tables = [t for t in ("usage", "monthly_usage") if _table_exists(conn, t)]
        if not tables or any(
                conn.execute(f"SELECT 1 FROM {t} WHERE subkey=? LIMIT 1", (subkey,)).fetchone() for t in tables):
            return None
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return (f"subkey {shorten(subkey)} {hash_subkey(subkey)} has no usage in {db_path} "
            f"(no rows in {' or '.join(tables)}): a typo or a placeholder? The name was saved; --remove takes it out")


def _upsert_in_txn(conn, subkey, name, email, description, now) -> UpsertResult:
    """Insert, or update only the fields given (not None). '' for email/description clears it."""
    old = _get_row(conn, subkey)
    if old is None:
        if name is None:
            raise InvalidName(f"subkey {shorten(subkey)} has no name yet: --name is required to add it")
        conn.execute(
            f"INSERT INTO {TABLE}(subkey, friendly_name, email, description, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (subkey, name, _norm(email), _norm(description), now, now),
        )
        return UpsertResult("inserted", _get_row(conn, subkey), ("friendly_name", "email", "description"))
    changes = {}
    if name is not None and name != old.friendly_name:
        changes["friendly_name"] = name
    if email is not None and _norm(email) != _norm(old.email):
        changes["email"] = _norm(email)
    if description is not None and _norm(description) != _norm(old.description):
        changes["description"] = _norm(description)
    if not changes:
        return UpsertResult("unchanged", old)
    sets = ", ".join(f"{k}=?" for k in changes) + ", updated_at=?"
    conn.execute(f"UPDATE {TABLE} SET {sets} WHERE subkey=?", (*changes.values(), now, subkey))
    return UpsertResult("updated", _get_row(conn, subkey), tuple(changes))


def _clean_fields(name, email, description):
    if name is not None:
        name = validate_name(name)
    if email is not None and email.strip():
        email = validate_email(email)
    if description is not None:
        description = description.strip()
    return name, email, description


def upsert_name(
    db_path: str,
    subkey: str,
    name: Optional[str] = None,
    email: Optional[str] = None,
    description: Optional[str] = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    backup: bool = True,
    err: Optional[TextIO] = None,
) -> UpsertResult:
    """Insert a new subkey, or change only the given fields of an existing one.

    ``None`` = not given (kept); ``""`` for email/description = clear it. created_at is kept;
    updated_at (UTC) is set only when something changed. Migrates a behind schema first.
    """
    subkey = validate_subkey(subkey)
    name, email, description = _clean_fields(name, email, description)
    if name is None and email is None and description is None:
        raise InvalidName("give --name (required for a new subkey), --email or --description")
    _ensure_current(db_path, timeout, backup, err)
    conn, _ = connect_rw(db_path, timeout)
    try:
        with _WriteTxn(conn, db_path, timeout):
            res = _upsert_in_txn(conn, subkey, name, email, description, _now_utc())
            if res.name_written:
                clash = name_clash_warning(subkey, res.row.friendly_name, _names_by_subkey(conn))
                if clash:
                    res.warnings.append(clash)
            return res
    finally:
        conn.close()


def remove_name(db_path: str, subkey: str, *, timeout: float = DEFAULT_TIMEOUT) -> NameRow:
    """Delete one subkey's name. Raises SubkeyNotFound (exit 1) when it has none."""
    subkey = validate_subkey(subkey)
    _refuse_empty(db_path)
    conn, _ = connect_rw(db_path, timeout)
    try:
        if not _table_exists(conn, TABLE):
            raise SubkeyNotFound(f"no name for subkey {shorten(subkey)}: {db_path} has no {TABLE} table")
        with _WriteTxn(conn, db_path, timeout):
            old = _get_row(conn, subkey)
            if old is None:
                raise SubkeyNotFound(f"no name for subkey {shorten(subkey)} in {db_path}; nothing removed")
            conn.execute(f"DELETE FROM {TABLE} WHERE subkey=?", (subkey,))
            return old
    finally:
        conn.close()


@dataclass(frozen=True)
class ImportRow:
    line: int
    subkey: str
    friendly_name: str
    email: Optional[str]  # None = cell empty or column absent: keep what is stored
    description: Optional[str]


def read_import_csv(path: str) -> list:
    """Parse and validate the whole file before anything is written. Raises InputError (one line)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise InputError(f"--import {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"--import {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"--import {path}: {exc.strerror}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"--import {path}: empty file (header subkey,friendly_name,email,description required)") from None
    header = [h.strip().lower() for h in header]
    unknown = [h for h in header if h not in EXPORT_COLUMNS]
    if unknown or "subkey" not in header or "friendly_name" not in header or len(set(header)) != len(header):
        raise InputError(
            f"--import {path}: bad header {','.join(header)!r}: expected subkey,friendly_name,email,description"
            " (email and description optional; subkey_sha256, created_at, updated_at ignored)"
        )
    idx = {h: i for i, h in enumerate(header)}
    rows, problems, seen = [], [], {}
    try:
        for rec in reader:
            line = reader.line_num
            if not any(c.strip() for c in rec):
                continue
            if len(rec) != len(header):
                problems.append((line, f"{len(rec)} fields, header has {len(header)}"))
                continue

            def cell(col):
                return rec[idx[col]] if col in idx else ""

            try:
                subkey = validate_subkey(cell("subkey"))
                fname = validate_name(cell("friendly_name")) if cell("friendly_name").strip() else None
                if fname is None:
                    raise InvalidName("friendly_name is empty")
                email = validate_email(cell("email")) if cell("email").strip() else None
                desc = cell("description").strip() or None
            except InvalidName as exc:
                problems.append((line, str(exc).replace("--subkey", "subkey").replace("--name", "friendly_name")))
                continue
            if subkey in seen:
                problems.append((line, f"subkey {shorten(subkey)} already on line {seen[subkey]}"))
                continue
            seen[subkey] = line
            rows.append(ImportRow(line, subkey, fname, email, desc))
    except csv.Error as exc:
        problems.append((reader.line_num, str(exc)))
    if problems:
        line, msg = problems[0]
        more = ""
        if len(problems) > 1:
            others = [str(p[0]) for p in problems[1:]]
            more = f" (and {len(others)} more: line{'s' if len(others) > 1 else ''} {', '.join(others)})"
        raise InputError(f"--import {path}: line {line}: {msg}{more}; nothing was written")
    return rows


def import_csv(
    db_path: str,
    path: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    dry_run: bool = False,
    backup: bool = True,
    err: Optional[TextIO] = None,
) -> ImportResult:
    """Validate every row, then upsert them all in ONE transaction. Empty cells keep stored values."""
    rows = read_import_csv(path)
    result = ImportResult(dry_run=dry_run)

    def note_clash(r: ImportRow, names_by_subkey: dict) -> None:
        """A row whose friendly_name is written: warn if another subkey has it (rows before it included)."""
        clash = name_clash_warning(r.subkey, r.friendly_name, names_by_subkey)
        if clash:
            result.warnings.append(f"--import {path}: line {r.line}: {clash}")
        names_by_subkey[r.subkey] = r.friendly_name

    if dry_run:
        _refuse_empty(db_path)
        conn = connect_ro(db_path, timeout)
        try:
            existing = {r.subkey: r for r in _read_rows(conn)} if _table_exists(conn, TABLE) else {}
        finally:
            conn.close()
        names_by_subkey = {sk: r.friendly_name for sk, r in existing.items()}
        for r in rows:
            old = existing.get(r.subkey)
            if old is None or r.friendly_name != old.friendly_name:
                note_clash(r, names_by_subkey)
            if old is None:
                result.inserted += 1
            elif (r.friendly_name != old.friendly_name
                  or (r.email is not None and r.email != _norm(old.email))
                  or (r.description is not None and r.description != _norm(old.description))):
                result.updated += 1
            else:
                result.unchanged += 1
        return result
    _ensure_current(db_path, timeout, backup, err)
    conn, _ = connect_rw(db_path, timeout)
    try:
        now = _now_utc()
        with _WriteTxn(conn, db_path, timeout):
            names_by_subkey = _names_by_subkey(conn)
            for r in rows:
                res = _upsert_in_txn(conn, r.subkey, r.friendly_name, r.email, r.description, now)
                setattr(result, res.action, getattr(result, res.action) + 1)
                if res.name_written:
                    note_clash(r, names_by_subkey)
    finally:
        conn.close()
    return result


# --------------------------------------------------------------------------- rendering


def _row_dict(r: NameRow, show_subkeys: bool) -> dict:
    return {
        "subkey": r.subkey if show_subkeys else shorten(r.subkey, ascii_only=True),
        "friendly_name": r.friendly_name,
        "email": _norm(r.email) or "",
        "description": _norm(r.description) or "",
        "subkey_sha256": r.subkey_sha256,
        "created_at": format_utc(r.created_at, iso=True),
        "updated_at": format_utc(r.updated_at, iso=True),
    }


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[int] = ()) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = []
    for r in [list(headers)] + rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def render_names(rows: Sequence[NameRow], fmt: str = "table", show_subkeys: bool = False) -> str:
    """table (subkeys shortened with '…', times '... UTC'), csv or json (shortened with '...', ISO 'Z')."""
    if fmt == "json":
        return json.dumps([_row_dict(r, show_subkeys) for r in rows], ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(_row_dict(r, show_subkeys))
        return buf.getvalue()
    if fmt != "table":
        raise InvalidName(f"unknown format {fmt!r}: table, csv or json")
    return render_table(
        ("SUBKEY", "SHA256", "FRIENDLY_NAME", "EMAIL", "DESCRIPTION", "UPDATED_AT"),
        [
            (r.subkey if show_subkeys else shorten(r.subkey), r.subkey_sha256, r.friendly_name,
             _norm(r.email) or "-", _norm(r.description) or "-", format_utc(r.updated_at))
            for r in rows
        ],
    )


def export_names(db_path: str, fmt: str = "csv", output: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT) -> tuple[str, int]:
    """Full subkeys, for --import. To ``output`` (written atomically, mode 0600) or returned as text.

    Returns (text or "", number of rows).
    """
    if fmt not in ("csv", "json"):
        raise InvalidName(f"--export format must be csv or json, not {fmt!r}")
    rows, _ = list_names(db_path, timeout)
    text = render_names(rows, fmt, show_subkeys=True)
    if output is None:
        return text, len(rows)
    out = Path(output)
    if not out.parent.is_dir():
        raise InputError(f"--output {output}: directory {out.parent} does not exist")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
        os.replace(tmp, out)
    except OSError as exc:
        _unlink_quietly(str(tmp))
        raise InputError(f"--output {output}: {exc.strerror}") from None
    return "", len(rows)


def _name_line(r: NameRow) -> str:
    bits = [r.friendly_name]
    if _norm(r.email):
        bits.append(f"<{_norm(r.email)}>")
    return " ".join(bits)


# --------------------------------------------------------------------------- the scripts' library calls


def manage(action: str, **kw) -> int:
    """add_subkey_names_table.py's one library call; any SQLite error left over becomes one line."""
    try:
        return _manage(action, **kw)
    except sqlite3.Error as exc:
        raise _translate(exc, kw["db_path"], kw.get("timeout", DEFAULT_TIMEOUT),
                         writing=action not in ("list", "export")) from None


def _manage(
    action: str,
    *,
    db_path: str,
    subkey: Optional[str] = None,
    name: Optional[str] = None,
    email: Optional[str] = None,
    description: Optional[str] = None,
    fmt: Optional[str] = None,
    show_subkeys: bool = False,
    output: Optional[str] = None,
    import_path: Optional[str] = None,
    dry_run: bool = False,
    backup: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
) -> int:
    """add_subkey_names_table.py: one action (init, migrate, add, list, remove, import, export).

    Data and results go to ``out`` (default stdout), warnings and notes to ``err`` (default stderr).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if action in ("init", "migrate"):
        res = migrate(db_path, timeout=timeout, dry_run=dry_run, backup=backup, create=action == "init")
        _print_migration(res, out)
        return 0
    if action == "add":
        res = upsert_name(db_path, subkey, name, email, description, timeout=timeout, backup=backup, err=err)
        r = res.row
        detail = f" ({', '.join(res.changed_fields)})" if res.action == "updated" else ""
        print(f"{res.action}: {shorten(r.subkey)} {r.subkey_sha256} {_name_line(r)}{detail}", file=out)
        no_usage = usage_warning(db_path, r.subkey, timeout)  # committed already: a read-only look
        for warning in res.warnings + ([no_usage] if no_usage else []):
            print(f"{MANAGE_PROG}: warning: {warning}", file=err)
        return 0
    if action == "remove":
        r = remove_name(db_path, subkey, timeout=timeout)
        print(f"removed: {shorten(r.subkey)} {r.subkey_sha256} {_name_line(r)}", file=out)
        return 0
    if action == "list":
        rows, state = list_names(db_path, timeout)
        if state == "email_missing":
            print(f"warning: {db_path}: {TABLE} has no email column ({MIGRATE_HINT})", file=err)
        elif state != "current":
            print(f"warning: {db_path}: {SCHEMA_STATE_TEXT[state]} ({MIGRATE_HINT})", file=err)
        if not rows:
            print(f"no names in {db_path}", file=err)
            if (fmt or "table") == "table":
                return 0
        out.write(render_names(rows, fmt or "table", show_subkeys))
        return 0
    if action == "export":
        text, n = export_names(db_path, fmt or "csv", output, timeout)
        if output is None:
            out.write(text)
        else:
            print(f"exported {n} names to {output} (mode 0600)", file=err)
        return 0
    if action == "import":
        res = import_csv(db_path, import_path, timeout=timeout, dry_run=dry_run, backup=backup, err=err)
        verb = "would import" if dry_run else "imported"
        print(f"{verb} {import_path}: {res.inserted} inserted, {res.updated} updated, {res.unchanged} unchanged", file=out)
        for warning in res.warnings:
            print(f"{MANAGE_PROG}: warning: {warning}", file=err)
        return 0
    raise InvalidName(f"unknown action {action!r}")


def _print_migration(res: MigrationResult, out: TextIO) -> None:
    if res.dry_run:
        if res.created_db:
            print(f"would create new database {res.db_path}", file=out)
        if not res.applied:
            print(f"{res.db_path}: already up to date; nothing would change", file=out)
            return
        if not res.created_db and not res.was_empty:
            print(f"would back up {res.db_path} first (unless --no-backup)", file=out)
        for name in res.applied:
            step = next(s for s in MIGRATIONS if s.name == name)
            sql = " ".join(" ".join(step.statements).split())
            print(f"would apply: {name} ({step.description}): {sql}", file=out)
        return
    if res.created_db:
        print(f"created new database {res.db_path} (mode 0600; the directory existed)", file=out)
    if not res.applied:
        print(f"{res.db_path}: already up to date; nothing changed", file=out)
        return
    if res.backup_path:
        print(f"backup: {res.backup_path}", file=out)
    for name in res.applied:
        print(f"applied: {_describe(name)}", file=out)
    print(f"{res.db_path}: schema is current", file=out)


# --------------------------------------------------------------------------- the check


@dataclass
class ActiveKey:
    subkey: str
    requests: int
    total_tokens: int
    last_month: Optional[str]
    status: Optional[str]  # from key_lifecycle when the service has that table
    name: Optional[NameRow]

    @property
    def subkey_sha256(self) -> str:
        return hash_subkey(self.subkey)


@dataclass
class Report:
    db_path: str
    size: int
    schema: str
    pending: list
    usage_tables: list
    active: list
    orphans: list  # NameRow with no usage
    lifecycle: dict

    @property
    def unnamed(self) -> list:
        return [k for k in self.active if k.name is None]

    @property
    def without_email(self) -> list:
        return [k for k in self.active if k.name is not None and not _norm(k.name.email)]

    @property
    def service_db(self) -> bool:
        """Without usage/monthly_usage this is not the service's quota.db (a wrong --db), not "0 keys"."""
        return bool(self.usage_tables)

    @property
    def ok(self) -> bool:
        return self.service_db and self.schema == "current" and not self.unnamed


def build_report(db_path: str, timeout: float = DEFAULT_TIMEOUT) -> Report:
    """Read-only view of names vs. the service's usage. Raises NamesUnavailable when unreadable."""
    conn = connect_ro(db_path, timeout)
    try:
        pend = [s.name for s in pending_steps(conn)]
        state = schema_state(conn)
        stats: dict = {}
        usage_tables = [t for t in ("usage", "monthly_usage") if _table_exists(conn, t)]
        if "usage" in usage_tables:
            for sk, req, tok in conn.execute(
                "SELECT subkey, SUM(requests), SUM(total_tokens) FROM usage GROUP BY subkey"
            ):
                stats[sk] = [req or 0, tok or 0, None]
        if "monthly_usage" in usage_tables:
            for sk, req, tok, last in conn.execute(
                "SELECT subkey, SUM(requests), SUM(total_tokens), MAX(usage_month) FROM monthly_usage GROUP BY subkey"
            ):
                if sk in stats:
                    stats[sk][2] = last
                else:  # only in monthly_usage: its sums are the best we have
                    stats[sk] = [req or 0, tok or 0, last]
        lifecycle = {}
        if _table_exists(conn, "key_lifecycle") and "status" in _columns(conn, "key_lifecycle"):
            lifecycle = dict(conn.execute("SELECT subkey, status FROM key_lifecycle"))
        names = {r.subkey: r for r in _read_rows(conn)} if _table_exists(conn, TABLE) else {}
    except sqlite3.Error as exc:
        raise _translate(exc, db_path, timeout, writing=False) from None
    finally:
        conn.close()
    active = [
        ActiveKey(sk, v[0], v[1], v[2], lifecycle.get(sk), names.get(sk))
        for sk, v in sorted(stats.items())
    ]
    orphans = [r for r in names.values() if r.subkey not in stats]
    orphans.sort(key=lambda r: (_sort_key(r.friendly_name or ""), r.subkey))
    return Report(db_path, os.path.getsize(db_path), state, pend, usage_tables, active, orphans, lifecycle)


def _add_command(db_path: str, subkey: str, with_name: bool = True) -> str:
    parts = ["python", "add_subkey_names_table.py", "--add", "--db", shlex.quote(db_path),
             "--subkey", shlex.quote(subkey)]
    if with_name:
        parts += ["--name", "'FRIENDLY NAME'"]
    parts += ["--email", "'EMAIL'"]
    return " ".join(parts)


def report_commands(rep: Report) -> list:
    if not rep.service_db:  # migrating or naming a file that is not the service's would fix nothing
        return []
    cmds = []
    if rep.schema != "current":
        cmds.append(f"python add_subkey_names_table.py --migrate --db {shlex.quote(rep.db_path)}")
    cmds += [_add_command(rep.db_path, k.subkey) for k in rep.unnamed]
    return cmds


def render_report_json(rep: Report, show_subkeys: bool = False) -> str:
    def sk(s):
        return s if show_subkeys else shorten(s, ascii_only=True)

    doc = {
        "database": rep.db_path,
        "size_bytes": rep.size,
        "schema": rep.schema,
        "pending_migrations": rep.pending,
        "usage_tables": rep.usage_tables,
        "service_database": rep.service_db,
        "active": [
            {
                "subkey": sk(k.subkey),
                "subkey_sha256": k.subkey_sha256,
                "requests": k.requests,
                "total_tokens": k.total_tokens,
                "last_month": k.last_month,
                "status": k.status,
                "friendly_name": k.name.friendly_name if k.name else None,
                "email": _norm(k.name.email) if k.name else None,
            }
            for k in rep.active
        ],
        "orphan_names": [
            {"subkey": sk(r.subkey), "subkey_sha256": r.subkey_sha256, "friendly_name": r.friendly_name,
             "email": _norm(r.email), "status": rep.lifecycle.get(r.subkey)}
            for r in rep.orphans
        ],
        "unnamed": [k.subkey_sha256 for k in rep.unnamed],
        "without_email": [k.subkey_sha256 for k in rep.without_email],
        "commands": report_commands(rep),
        "ok": rep.ok,
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def render_report_text(rep: Report, show_subkeys: bool = False) -> str:
    def sk(s):
        return s if show_subkeys else shorten(s)

    lines = [f"database: {rep.db_path} (found, {rep.size} bytes, opened read-only)"]
    if not rep.service_db:
        lines.append(f"not the service's database: {NOT_SERVICE_DB} (check --db or QUOTA_DB_PATH)")
        lines.append("result: not the service's database")
        return "\n".join(lines) + "\n"
    if rep.schema == "current":
        lines.append("schema: current")
    else:
        lines.append(f"schema: {SCHEMA_STATE_TEXT[rep.schema]} (pending: {', '.join(rep.pending)})")
    lines.append(f"active subkeys: {len(rep.active)} (from {', '.join(rep.usage_tables)})")
    if rep.active:
        table = render_table(
            ("SUBKEY", "SHA256", "REQUESTS", "TOTAL_TOKENS", "LAST_MONTH", "STATUS", "FRIENDLY_NAME", "EMAIL"),
            [
                (sk(k.subkey), k.subkey_sha256, k.requests, k.total_tokens, k.last_month or "-",
                 k.status or "-", k.name.friendly_name if k.name else "(none)",
                 (_norm(k.name.email) or "-") if k.name else "-")
                for k in rep.active
            ],
            right=(2, 3),
        )
        lines += ["  " + ln for ln in table.rstrip("\n").split("\n")]
    lines.append(f"names matching no active key: {len(rep.orphans)}")
    for r in rep.orphans:
        status = rep.lifecycle.get(r.subkey)
        lines.append(f"  {sk(r.subkey)} {r.subkey_sha256} {r.friendly_name}" + (f" ({status})" if status else ""))
    if rep.without_email:
        lines.append(f"named without email (optional): {len(rep.without_email)}")
        for k in rep.without_email:
            lines.append(f"  {sk(k.subkey)} {k.subkey_sha256} {k.name.friendly_name}")
    cmds = report_commands(rep)
    if cmds:
        lines.append("to fix, run:")
        lines += ["  " + c for c in cmds]
        if rep.unnamed:
            lines.append(f"  (or enter the names at a prompt: python check_and_setup_names.py --interactive --db {shlex.quote(rep.db_path)})")
    if rep.ok:
        lines.append("result: ok")
    else:
        bits = []
        if rep.schema != "current":
            bits.append(f"schema {SCHEMA_STATE_TEXT[rep.schema]}")
        if rep.unnamed:
            n = len(rep.unnamed)
            bits.append(f"{n} active subkey{'s' if n != 1 else ''} without a name")
        lines.append("result: " + "; ".join(bits))
    return "\n".join(lines) + "\n"


def stdin_input(prompt: str) -> str:
    """Prompt on stderr (stdout stays the report), read one line from stdin; EOFError at the end."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


def interactive_setup(
    db_path: str,
    *,
    input_fn: Callable[[str], str] = stdin_input,
    err: Optional[TextIO] = None,
    timeout: float = DEFAULT_TIMEOUT,
    backup: bool = True,
) -> int:
    """Ask a name (and email) for each unnamed active subkey and save it. Returns how many were saved.

    An empty name skips the key; an invalid email is asked again; end of input stops.
    Prompts are written by ``input_fn``; notes go to ``err`` (default stderr).
    """
    err = err if err is not None else sys.stderr
    rep = build_report(db_path, timeout)
    saved = 0
    for k in rep.unnamed:
        try:
            name = input_fn(f"name for {shorten(k.subkey)} {k.subkey_sha256} ({k.requests} requests; empty = skip): ").strip()
            if not name:
                continue
            while True:
                email = input_fn(f"email for {name} (empty = none): ").strip()
                if not email:
                    break
                try:
                    email = validate_email(email)
                    break
                except InvalidName as exc:
                    print(str(exc), file=err)
        except EOFError:
            print("end of input: stopping", file=err)
            break
        res = upsert_name(db_path, k.subkey, name, email or None, timeout=timeout, backup=backup, err=err)
        print(f"saved: {shorten(k.subkey)} {k.subkey_sha256} {_name_line(res.row)}", file=err)
        for warning in res.warnings:
            print(f"{CHECK_PROG}: warning: {warning}", file=err)
        saved += 1
    return saved


def check(db_path: str, **kw) -> int:
    """check_and_setup_names.py's one library call; any SQLite error left over becomes one line."""
    try:
        return _check(db_path, **kw)
    except sqlite3.Error as exc:
        raise _translate(exc, db_path, kw.get("timeout", DEFAULT_TIMEOUT),
                         writing=bool(kw.get("fix") or kw.get("interactive"))) from None


def _check(
    db_path: str,
    *,
    fix: bool = False,
    interactive: bool = False,
    as_json: bool = False,
    show_subkeys: bool = False,
    input_fn: Callable[[str], str] = stdin_input,
    backup: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
) -> int:
    """check_and_setup_names.py: report; exit 0 all named and schema current, 1 something missing.

    An unreadable or locked database raises NamesUnavailable (exit 2), never "no keys"; a SQLite file
    without the service's usage tables is reported as not the service's database (exit 1), and
    --fix leaves it alone.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if fix and not build_report(db_path, timeout).service_db:
        print(f"{db_path}: not migrated: {NOT_SERVICE_DB}, so it is not the service's quota.db", file=err)
        fix = False
    if fix:
        res = migrate(db_path, timeout=timeout, backup=backup, create=False)
        if res.backup_path:
            print(f"backup: {res.backup_path}", file=err)
        for name in res.applied:
            print(f"migrated: {_describe(name)}", file=err)
        if not res.applied:
            print(f"{db_path}: schema already up to date", file=err)
    if interactive:
        interactive_setup(db_path, input_fn=input_fn, err=err, timeout=timeout, backup=backup)
    rep = build_report(db_path, timeout)
    out.write(render_report_json(rep, show_subkeys) if as_json else render_report_text(rep, show_subkeys))
    return 0 if rep.ok else 1
