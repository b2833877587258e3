"""Real journalctl output for tests: the bundled journal files printed in any -o view."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "11111111-2222-4333-8444-555555555555"


def journal_file(service: str, tmp_dir: Path) -> Path:
    """service.journal.gz unpacked (journalctl reads only plain journal files)."""
    out = tmp_dir / f"{service}.journal"
    if not out.exists():
        with gzip.open(FIXTURES / service / "service.journal.gz") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return out


def journalctl_view(service: str, view: str, tmp_dir: Path, tz: str = "UTC", extra=()) -> Path:
    """Print the service's journal the way an operator would extract it; returns the text file."""
    if shutil.which("journalctl") is None:
        pytest.skip("journalctl is not installed (Debian: apt-get install systemd); .ci/run installs it")
    jf = journal_file(service, tmp_dir)
    out = tmp_dir / f"{service}.{view}.{tz.replace('/', '_')}{''.join(extra)}.txt"
    if not out.exists():
        env = dict(os.environ, TZ=tz)
        with open(out, "wb") as fh:
            subprocess.run(["journalctl", "--file", str(jf), "--no-pager", "-u", "oai-to-circuit.service",
                            "-o", view, *extra], stdout=fh, env=env, check=True)
    return out


def expected(service: str, kind: str = "usage"):
    """(accepted, failed) payload records of the given kind, as the HEC endpoint saw them."""
    out = {}
    for name in ("accepted", "failed"):
        with gzip.open(FIXTURES / service / f"hec_{name}.jsonl.gz", "rt", encoding="utf-8") as fh:
            out[name] = [d for d in map(json.loads, fh) if d["kind"] == kind]
    return out["accepted"], out["failed"]


@lru_cache(maxsize=None)
def fixture(service: str) -> dict:
    return json.loads((FIXTURES / f"fixture-{service.split('-', 1)[1]}.json").read_text(encoding="utf-8"))


def db_path(service: str) -> Path:
    return FIXTURES / f"quota-{service.split('-', 1)[1]}.db"


def live_outcome(record: dict) -> str:
    """What the service itself knew of one expected/ record's send: delivered (hec_accepted), or, for a
    hec_failed record, uncertain when its client gave up waiting (a timeout: the body may have arrived,
    and did, see receiver_saw_body) and failed otherwise (an HTTP error status, a refused connection)."""
    cs = record.get("client_side")
    if cs is None:
        return "delivered"
    if cs.get("outcome") == "exception" and "timeout" in cs.get("exc_type", "").lower():
        return "uncertain"
    return "failed"


def names_by_hash(service: str) -> dict:
    """subkey_names of the service's quota.db, keyed by the sha256: form the events carry:
    (friendly_name, email or None: the service leaves an empty email out of the event)."""
    import sqlite3

    from oai_to_circuit.events import hash_subkey

    con = sqlite3.connect(f"file:{db_path(service)}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT subkey, friendly_name, email FROM subkey_names").fetchall()
    finally:
        con.close()
    return {hash_subkey(s): (n, e or None) for s, n, e in rows}


def nameless_db(tmp_dir: Path) -> str:
    """A copy of the 9c7664e service's quota.db, which predates subkey_names: the backfill warns once and
    sends without names, whatever this machine has at /var/lib/oai-to-circuit/quota.db."""
    p = tmp_dir / "nameless" / "quota.db"
    p.parent.mkdir(exist_ok=True)
    shutil.copyfile(FIXTURES / "quota-9c7664e.db", p)
    return str(p)
