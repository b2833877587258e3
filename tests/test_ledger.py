"""The delivery ledger: one sending run at a time, older ledgers upgraded in place, reads never write."""
from __future__ import annotations

import sqlite3

import pytest

from oai_to_circuit.errors import ConfigError
from oai_to_circuit.ledger import Ledger


def test_a_second_sending_run_on_the_same_ledger_is_refused_until_the_first_ends(tmp_path):
    path = tmp_path / "ledger.db"
    first = Ledger(path, "run-1", destination="splunk:8088")
    with pytest.raises(ConfigError, match="another run is sending with the ledger"):
        Ledger(path, "run-2")
    first.close()
    second = Ledger(path, "run-2")
    second.close()


def test_a_ledger_from_before_destinations_is_upgraded_and_read(tmp_path):
    path = tmp_path / "ledger.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE deliveries (index_name TEXT NOT NULL, backfill_id TEXT NOT NULL, state TEXT NOT NULL "
                "CHECK (state IN ('inflight', 'delivered')), run_id TEXT NOT NULL, maybe_doubled INTEGER NOT NULL "
                "DEFAULT 0, updated_at TEXT NOT NULL, PRIMARY KEY (index_name, backfill_id)) WITHOUT ROWID")
    con.execute("INSERT INTO deliveries VALUES ('oai_circuit', 'a' , 'delivered', 'old', 0, '2026-01-01T00:00:00Z')")
    con.commit()
    con.close()
    ro = Ledger(path, "peek", readonly=True)
    assert ro.lookup("oai_circuit", "a") == ("delivered", "old", "", None)  # a dry run still sees it as sent
    ro.close()
    rw = Ledger(path, "new", destination="splunk:8088")
    assert rw.lookup("oai_circuit", "a") == ("delivered", "old", "", None)  # names sent: not recorded then
    rw.mark_delivered("oai_circuit", "b")
    assert rw.lookup("oai_circuit", "b") == ("delivered", "new", "splunk:8088", None)
    rw.mark_inflight("oai_circuit", "c", 3141592653)
    rw.mark_delivered("oai_circuit", "c")
    assert rw.lookup("oai_circuit", "c") == ("delivered", "new", "splunk:8088", 3141592653)
    rw.close()


def test_an_env_file_that_is_not_text_is_one_clear_error(tmp_path):
    from oai_to_circuit.config import load_settings

    bad = tmp_path / "credentials.env"
    bad.write_bytes(b"\xff\xfe\x00\x81 binary")
    with pytest.raises(ConfigError, match="not a text file of NAME=value lines"):
        load_settings(str(bad))
