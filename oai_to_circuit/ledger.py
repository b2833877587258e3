"""What was already delivered: exactly-once across runs, overlapping extracts and kill -9.

One SQLite row per (index, backfill_id), with the collectors it went to (shown, not part of the
key: the same Splunk written as another URL, or with a failover node added, is still the same). An event is marked ``inflight`` when it is handed to
the HEC client and ``delivered`` only once HEC accepted (or acknowledged) it. A row still
``inflight`` at the start of a run belongs to a run that died mid-send: HEC may or may not have
those events, so they are resent and reported as possibly doubled (``| dedup backfill_id``).
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    index_name    TEXT NOT NULL,
    backfill_id   TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('inflight', 'delivered')),
    run_id        TEXT NOT NULL,
    maybe_doubled INTEGER NOT NULL DEFAULT 0,
    updated_at    TEXT NOT NULL,
    destination   TEXT NOT NULL DEFAULT '',
    names         INTEGER,  -- CRC-32 of friendly_name and email as sent (NULL: not recorded): later names are noticed
    PRIMARY KEY (index_name, backfill_id)
) WITHOUT ROWID;
"""


def default_ledger_path() -> Path:
    """$XDG_STATE_HOME/oai-to-circuit/backfill-ledger.db (else ~/.local/state/...): any user can write it."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "oai-to-circuit" / "backfill-ledger.db"


_clock = [0, ""]  # the last second formatted: a backfill marks thousands of events per second


def _now() -> str:
    sec = int(time.time())
    if sec != _clock[0]:
        _clock[:] = [sec, datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")]
    return _clock[1]


class Ledger:
    def __init__(self, path, run_id: str, readonly: bool = False, destination: str = ""):
        self.path = Path(path)
        self.run_id = run_id
        self.destination = destination
        self.db: Optional[sqlite3.Connection] = None
        try:
            if readonly:
                if self.path.exists():
                    self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock()
                self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")  # survives kill -9; fsync at checkpoints
                self.db.executescript(SCHEMA)
                columns = {row[1] for row in self.db.execute("PRAGMA table_info(deliveries)")}
                if "destination" not in columns:  # a ledger from before destinations were recorded
                    self.db.execute("ALTER TABLE deliveries ADD COLUMN destination TEXT NOT NULL DEFAULT ''")
                if "names" not in columns:  # ... or before the names sent were
                    self.db.execute("ALTER TABLE deliveries ADD COLUMN names INTEGER")
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"ledger {self.path}: {exc} (choose another with --ledger PATH)") from None

    def _lock(self) -> None:
        """One sending run per ledger: another one's in-flight rows would look like a crash's."""
        self._lock_fh = open(f"{self.path}.lock", "a+")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise ConfigError(f"another run is sending with the ledger {self.path}: wait for it to finish"
                              " (or give this run its own --ledger)") from None

    def lookup(self, index: str, backfill_id: str) -> Optional[tuple]:
        """(state, run_id, destination, names) of an event, or None when this ledger has never seen it."""
        if self.db is None:
            return None
        try:
            return self.db.execute("SELECT state, run_id, destination, names FROM deliveries"
                                   " WHERE index_name=? AND backfill_id=?", (index, backfill_id)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such column" in str(exc):  # a read-only look at a ledger from before destinations or names
                cols = {row[1] for row in self.db.execute("PRAGMA table_info(deliveries)")}
                dest = "destination" if "destination" in cols else "''"
                return self.db.execute(f"SELECT state, run_id, {dest}, NULL FROM deliveries"
                                       " WHERE index_name=? AND backfill_id=?", (index, backfill_id)).fetchone()
            if "no such table" in str(exc):
                return None  # a read-only look at a ledger without the table yet
            raise

    def lookup_many(self, index: str, backfill_ids: list) -> dict:
        """{backfill_id: lookup()} for those of ``backfill_ids`` the ledger has: one query, not one per event."""
        if self.db is None or not backfill_ids:
            return {}
        marks = ",".join("?" * len(backfill_ids))
        try:
            rows = self.db.execute(f"SELECT backfill_id, state, run_id, destination, names FROM deliveries"
                                   f" WHERE index_name=? AND backfill_id IN ({marks})", (index, *backfill_ids))
            return {r[0]: r[1:] for r in rows}
        except sqlite3.OperationalError as exc:
            if "no such column" in str(exc) or "no such table" in str(exc):  # an old ledger, read-only
                found = ((i, self.lookup(index, i)) for i in backfill_ids)
                return {i: row for i, row in found if row}
            raise

    def mark_inflight(self, index: str, backfill_id: str, names: Optional[int] = None) -> None:
        self.db.execute(
            "INSERT INTO deliveries(index_name, backfill_id, state, run_id, updated_at, destination, names)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT(index_name, backfill_id) DO UPDATE SET state='inflight',"
            " run_id=excluded.run_id, updated_at=excluded.updated_at, destination=excluded.destination,"
            " names=excluded.names",
            (index, backfill_id, "inflight", self.run_id, _now(), self.destination, names))

    def mark_delivered(self, index: str, backfill_id: str, maybe_doubled: bool = False) -> None:
        # the row is there (marked in flight before the send): one UPDATE, the upsert only if not
        if self.db.execute(
                "UPDATE deliveries SET state='delivered', run_id=?, maybe_doubled=?, updated_at=?, destination=? "
                "WHERE index_name=? AND backfill_id=?",
                (self.run_id, int(maybe_doubled), _now(), self.destination, index, backfill_id)).rowcount:
            return
        self.db.execute(
            "INSERT INTO deliveries(index_name, backfill_id, state, run_id, maybe_doubled, updated_at, destination) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT(index_name, backfill_id) DO UPDATE SET state='delivered', "
            "run_id=excluded.run_id, maybe_doubled=excluded.maybe_doubled, updated_at=excluded.updated_at, "
            "destination=excluded.destination",
            (index, backfill_id, "delivered", self.run_id, int(maybe_doubled), _now(), self.destination))

    def mark_delivered_many(self, index: str, marks: list) -> None:
        """mark_delivered for each (backfill_id, maybe_doubled): one statement for the lot."""
        now = _now()
        cur = self.db.executemany(
            "UPDATE deliveries SET state='delivered', run_id=?, maybe_doubled=?, updated_at=?, destination=? "
            "WHERE index_name=? AND backfill_id=?",
            [(self.run_id, int(maybe), now, self.destination, index, bid) for bid, maybe in marks])
        if cur.rowcount != len(marks):  # some had no in-flight row: the upsert, one by one (idempotent)
            for bid, maybe in marks:
                self.mark_delivered(index, bid, maybe)

    def forget(self, index: str, backfill_id: str) -> None:
        """The event failed for good (dead-lettered): it is not in flight any more."""
        self.db.execute("DELETE FROM deliveries WHERE index_name=? AND backfill_id=? AND state='inflight'",
                        (index, backfill_id))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        if getattr(self, "_lock_fh", None) is not None:
            self._lock_fh.close()  # releases the lock
            self._lock_fh = None
