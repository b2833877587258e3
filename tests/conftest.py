import shutil

import pytest


@pytest.fixture
def hec_server():
    """A started HECServer on 127.0.0.1 (tests/hec_server.py), stopped after the test."""
    from hec_server import HECServer

    with HECServer() as server:
        yield server


@pytest.fixture
def db9(tmp_path):
    """A copy of the 9c7664e service's quota.db: usage only, no subkey_names (a real pre-names database)."""
    from journal_views import FIXTURES

    p = tmp_path / "quota.db"
    shutil.copyfile(FIXTURES / "quota-9c7664e.db", p)
    return str(p)


@pytest.fixture
def dbe(tmp_path):
    """A copy of the e749b02 (HEAD) service's quota.db: usage, monthly_usage, key_lifecycle, subkey_names."""
    from journal_views import FIXTURES

    p = tmp_path / "quota.db"
    shutil.copyfile(FIXTURES / "quota-e749b02.db", p)
    return str(p)


@pytest.fixture
def env(tmp_path, monkeypatch, hec_server):
    """A clean operator environment for backfill_hec.py: HEC settings in the environment, cwd and
    state in tmp, and a names database without subkey_names (whatever this machine has at
    /var/lib/oai-to-circuit/quota.db). Returns the HEC server."""
    from journal_views import TOKEN, nameless_db

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("SPLUNK_HEC_URL", hec_server.url + "/services/collector/event")
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", TOKEN)
    monkeypatch.setenv("QUOTA_DB_PATH", nameless_db(tmp_path))
    monkeypatch.delenv("SPLUNK_INDEX", raising=False)
    return hec_server
