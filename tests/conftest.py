import pytest


@pytest.fixture
def hec_server():
    """A started HECServer on 127.0.0.1 (tests/hec_server.py), stopped after the test."""
    from hec_server import HECServer

    with HECServer() as server:
        yield server
