"""Fault injection: what HEC stores, what the client reports, for every failure HEC and its LBs produce.

Every test counts the events the server stored by the id in each event and checks the Results,
and every test's log output (verbose on) and captured stdout/stderr must not contain the token.
"""
import datetime as dt
import ipaddress
import json
import socket
import time
from collections import Counter

import pytest

from hec_server import HECServer
from oai_to_circuit.splunk_hec import HECFatalError, Outgoing, SplunkHEC

TOKEN = "c0ffee00-dead-4bee-8f00-5ec2e7000001"


def items(n, prefix="e", pad=0):
    return [Outgoing(f"{prefix}{i}", json.dumps({"time": 1768435200.0 + i, "event": {"id": f"{prefix}{i}", "pad": "x" * pad}},
                                                separators=(",", ":")).encode()) for i in range(n)]


def stored(server):
    return Counter(e["event"]["id"] for e in server.events)


def ids(n, prefix="e"):
    return [f"{prefix}{i}" for i in range(n)]


def by_id(results):
    results = list(results)
    out = {r.id: r for r in results}
    assert len(out) == len(results), "one Result per item"
    return out


@pytest.fixture
def logs(capfd):
    """Every log line of the clients made in the test; none (nor stdout/stderr) may carry the token."""
    lines = []
    yield lines
    out, err = capfd.readouterr()
    assert TOKEN not in "\n".join(lines) + out + err


@pytest.fixture
def make(logs):
    """SplunkHEC with fast retry settings, verbose, logging into ``logs``."""
    made = []

    def factory(url, **kw):
        kw.setdefault("retry_for", 5.0)
        kw.setdefault("backoff_base", 0.01)
        kw.setdefault("backoff_cap", 0.05)
        kw.setdefault("timeout", 5.0)
        kw.setdefault("ack_poll_interval", 0.05)
        kw.setdefault("ack_poll_max", 0.2)
        hec = SplunkHEC(url, kw.pop("token", TOKEN), verbose=True, log=logs.append, **kw)
        made.append(hec)
        return hec

    yield factory
    for hec in made:
        hec.close()


@pytest.fixture
def server():
    with HECServer(token=TOKEN) as s:
        yield s


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- retryable replies ---------------------------------------------------------------------------

def test_503_three_times_then_ok(server, make, logs):
    server.fail_next(3)
    results = by_id(make(server.url, max_batch_events=4).deliver(items(10)))
    assert {r.status for r in results.values()} == {"delivered"}
    assert not any(r.maybe_doubled for r in results.values())
    assert stored(server) == Counter(ids(10))
    assert [r["status"] for r in server.requests] == [503, 503, 503, 200, 200, 200]
    posts = [line for line in logs if line.startswith("POST ")]
    assert len(posts) == 6
    assert posts[0].startswith(f"POST {server.url}/services/collector/event events=4 bytes=")
    assert " gzip=" in posts[0] and "-> HTTP 503 code=9 " in posts[0] and posts[0].endswith("s")
    assert "-> HTTP 200 code=0 " in posts[3]


def test_wrong_path_is_fatal(server, make):
    with pytest.raises(HECFatalError, match="not a HEC endpoint"):
        list(make(server.url + "/splunk/services/collector").deliver(items(1)))


@pytest.mark.parametrize("status, code", [(503, 9), (429, 9)])
def test_retry_after_is_honoured(server, make, status, code):
    server.fail_next(1, status=status, code=code, retry_after=1)
    t0 = time.monotonic()
    results = list(make(server.url, backoff_base=0.001).deliver(items(3)))
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 2.5  # Retry-After: 1, while the backoff alone would be milliseconds
    assert [r.status for r in results] == ["delivered"] * 3
    assert stored(server) == Counter(ids(3))


def test_retries_end_after_retry_for_and_fail_with_the_last_reason(server, make):
    server.fail_next(1000, status=500, code=8, text="Internal server error")
    t0 = time.monotonic()
    results = list(make(server.url, retry_for=0.5).deliver(items(3)))
    assert time.monotonic() - t0 < 1.5
    assert [r.status for r in results] == ["failed"] * 3
    assert results[0].reason.startswith("gave up after ")
    assert "(--retry-for 0.5s would pass before the next): Internal server error (HTTP 500, code 8" in results[0].reason
    assert stored(server) == Counter()


def test_502_html_from_a_load_balancer(server, make, logs):
    server.fail_next(2, status=502, html=True)
    server.fail_next(1, status=504, html=True)
    results = list(make(server.url).deliver(items(5)))
    assert [r.status for r in results] == ["delivered"] * 5
    assert stored(server) == Counter(ids(5))
    assert [r["status"] for r in server.requests] == [502, 502, 504, 200]
    assert sum("HTTP 502 code=None" in line for line in logs) == 2


# -- ambiguous sends ------------------------------------------------------------------------------

def test_timeout_after_the_body_was_stored_resends_and_flags(server, make):
    server.delay_next(1.0)
    results = by_id(make(server.url, timeout=0.4, max_batch_events=4).deliver(items(8)))
    assert {r.status for r in results.values()} == {"delivered"}
    flagged = {i for i, r in results.items() if r.maybe_doubled}
    assert flagged == set(ids(4))
    counts = stored(server)
    assert counts == Counter(ids(8)) + Counter(ids(4))  # first batch twice, the rest once
    assert {i for i, c in counts.items() if c > 1} <= flagged


@pytest.mark.parametrize("store, copies", [(False, 1), (True, 2)])
def test_dropped_connection_resends_and_flags(server, make, store, copies):
    server.drop_next(1, store=store)
    results = by_id(make(server.url, max_batch_events=3).deliver(items(6)))
    assert {r.status for r in results.values()} == {"delivered"}
    assert {i for i, r in results.items() if r.maybe_doubled} == set(ids(3))
    assert stored(server) == Counter(ids(6)) + Counter(ids(3) * (copies - 1))
    assert [r["status"] for r in server.requests] == [None, 200, 200]


# -- 413 ------------------------------------------------------------------------------------------

def test_413_splits_until_batches_fit_and_delivers_each_once(make):
    with HECServer(token=TOKEN, max_content_length=1500) as server:
        batch = items(40, pad=150)
        assert sum(len(o.body) for o in batch) > 4 * 1500
        results = list(make(server.url, gzip=False).deliver(batch))
        assert [r.status for r in results].count("delivered") == 40
        assert stored(server) == Counter(ids(40))
        statuses = [r["status"] for r in server.requests]
        assert statuses[0] == 413 and statuses.count(200) >= 4
        assert all(r["bytes"] <= 1500 for r in server.requests if r["status"] == 200)


def test_413_single_oversized_event_fails_with_its_size(make):
    with HECServer(token=TOKEN, max_content_length=1500) as server:
        big = Outgoing("big", json.dumps({"event": {"id": "big", "pad": "y" * 3000}}).encode())
        batch = items(6) + [big] + items(6, prefix="f")
        results = by_id(make(server.url, gzip=False).deliver(batch))
        assert results["big"].status == "failed"
        assert results["big"].reason == f"event too large for HEC max_content_length: {len(big.body)} bytes"
        assert {i for i, r in results.items() if r.status == "delivered"} == set(ids(6) + ids(6, "f"))
        assert stored(server) == Counter(ids(6) + ids(6, "f"))


# -- rejected events -----------------------------------------------------------------------------

def test_invalid_event_at_k(server, make):
    server.reject_event_at(3)
    results = by_id(make(server.url).deliver(items(10)))
    assert results["e3"].status == "failed"
    assert results["e3"].reason == "Invalid data format (HTTP 400, code 6)"
    assert {i for i, r in results.items() if r.status == "delivered"} == set(ids(10)) - {"e3"}
    assert stored(server) == Counter(ids(10)) - Counter(["e3"])
    assert [(r["status"], r["events"]) for r in server.requests] == [(400, 10), (200, 6)]
    assert not any(r.maybe_doubled for r in results.values())


def test_event_without_event_field_is_failed_alone(server, make):
    batch = items(3) + [Outgoing("bad", b'{"time":1768435200.0,"fields":{"id":"bad"}}')] + items(3, prefix="f")
    results = by_id(make(server.url).deliver(batch))
    assert (results["bad"].status, results["bad"].reason) == ("failed", "Event field is required (HTTP 400, code 12)")
    assert stored(server) == Counter(ids(3) + ids(3, "f"))
    assert sum(r.status == "delivered" for r in results.values()) == 6


def test_4xx_without_event_number_is_never_resent_unchanged(server, make):
    server.fail_next(3, status=400, code=6, text="Invalid data format")  # no invalid-event-number
    results = by_id(make(server.url).deliver(items(4)))
    assert results["e0"].status == "failed"
    assert {i for i, r in results.items() if r.status == "delivered"} == {"e1", "e2", "e3"}
    assert [r["events"] for r in server.requests] == [4, 2, 1, 1, 2]  # halves until the bad one stands alone


# -- fatal configuration errors -------------------------------------------------------------------

def test_wrong_token_is_fatal_with_pending_and_no_token_in_message(server, make):
    consumed = []

    def gen():
        for o in items(20):
            consumed.append(o.id)
            yield o

    hec = make(server.url, token="wrong-0000-token-value", max_batch_events=5)
    with pytest.raises(HECFatalError) as exc:
        list(hec.deliver(gen()))
    err = exc.value
    assert [o.id for o in err.pending] == ids(5) == consumed
    assert err.exit_code == 2
    assert "wrong-0000-token-value" not in str(err) and TOKEN not in str(err)
    assert "\n" not in str(err) and "token is not valid" in str(err) and "code 4" in str(err)
    assert stored(server) == Counter()


@pytest.mark.parametrize("status, code, text, phrase", [
    (401, 2, "Token is required", "no token was sent"),
    (401, 3, "Invalid authorization", "Authorization header"),
    (403, 1, "Token disabled", "the token is disabled"),
    (400, 21, "Invalid token", "the token is not valid"),
])
def test_token_errors_are_fatal(server, make, status, code, text, phrase):
    server.fail_next(1, status=status, code=code, text=text)
    hec = make(server.url, max_batch_events=2)
    with pytest.raises(HECFatalError) as exc:
        for _ in hec.deliver(items(5)):
            pass
    assert phrase in str(exc.value) and f"code {code}" in str(exc.value)
    assert [o.id for o in exc.value.pending] == ["e0", "e1"]


def test_fatal_after_some_delivered_leaves_only_the_rest_pending(server, make):
    hec = make(server.url, max_batch_events=3)
    it = hec.deliver(items(9))
    first = [next(it) for _ in range(3)]
    server.fail_next(1, status=403, code=4, text="Invalid token")
    with pytest.raises(HECFatalError) as exc:
        list(it)
    assert [r.id for r in first] == ids(3)
    assert [o.id for o in exc.value.pending] == ["e3", "e4", "e5"]
    assert stored(server) == Counter(ids(3))


def test_incorrect_index_is_fatal_and_names_the_index(make):
    with HECServer(token=TOKEN, indexes={"main"}) as server:
        body = lambda i: json.dumps({"index": "oai_circuit", "event": {"id": f"e{i}"}}).encode()
        with pytest.raises(HECFatalError) as exc:
            list(make(server.url).deliver(Outgoing(f"e{i}", body(i)) for i in range(4)))
        assert "'oai_circuit'" in str(exc.value) and "code 7" in str(exc.value)
        assert len(exc.value.pending) == 4
        assert stored(server) == Counter()


# -- indexer acknowledgement ------------------------------------------------------------------------

def test_acks_on_time(make):
    with HECServer(token=TOKEN, ack=True) as server:
        hec = make(server.url, ack=True, max_batch_events=3)
        results = list(hec.deliver(items(9)))
        assert [r.status for r in results].count("delivered") == 9 and not any(r.maybe_doubled for r in results)
        assert stored(server) == Counter(ids(9))
        assert {r["channel"] for r in server.requests} == {hec.channel}
        assert sum(r["path"] == "/services/collector/ack" for r in server.requests) >= 1


def test_late_acks_within_ack_timeout(make):
    with HECServer(token=TOKEN, ack=True) as server:
        server.ack_delay(0.6)
        t0 = time.monotonic()
        results = list(make(server.url, ack=True, ack_timeout=5.0).deliver(items(4)))
        assert time.monotonic() - t0 >= 0.6
        assert [r.status for r in results] == ["delivered"] * 4 and not any(r.maybe_doubled for r in results)
        assert stored(server) == Counter(ids(4))
        assert [r["path"] for r in server.requests].count("/services/collector/event") == 1


def test_acks_never_come_resend_once_then_fail(make, logs):
    with HECServer(token=TOKEN, ack=True) as server:
        server.ack_never()
        results = list(make(server.url, ack=True, ack_timeout=0.4).deliver(items(4)))
        assert [(r.status, r.reason, r.maybe_doubled) for r in results] == \
            [("failed", "not acknowledged within 0.4s", True)] * 4
        assert stored(server) == Counter(ids(4) * 2)
        assert [r["path"] for r in server.requests].count("/services/collector/event") == 2
        assert sum("resending 4 events once" in line for line in logs) == 1


def test_code_10_turns_acks_on(make, logs):
    with HECServer(token=TOKEN, ack=True) as server:
        hec = make(server.url)  # ack=None: auto
        results = list(hec.deliver(items(5)))
        assert [r.status for r in results] == ["delivered"] * 5 and not any(r.maybe_doubled for r in results)
        assert stored(server) == Counter(ids(5))
        first, second = server.requests[:2]
        assert (first["status"], first["channel"]) == (400, None)
        assert (second["status"], second["channel"]) == (200, hec.channel)
        assert any(r["path"] == "/services/collector/ack" for r in server.requests)
        assert sum("code 10" in line for line in logs) == 1


def test_code_10_with_acks_off_is_fatal(make):
    with HECServer(token=TOKEN, ack=True) as server:
        with pytest.raises(HECFatalError, match="code 10"):
            list(make(server.url, ack=False).deliver(items(2)))


def test_forced_acks_on_a_token_without_acks_fall_back(server, make, logs):
    results = list(make(server.url, ack=True, max_batch_events=2).deliver(items(4)))
    assert [r.status for r in results] == ["delivered"] * 4
    assert stored(server) == Counter(ids(4))
    assert sum("acknowledgement is disabled" in line for line in logs) == 1
    assert not any(r["path"] == "/services/collector/ack" for r in server.requests)


# -- failover -------------------------------------------------------------------------------------

def test_failover_from_a_closed_port(server, make):
    dead = f"http://127.0.0.1:{closed_port()}"
    hec = make(f"{dead},{server.url}", max_batch_events=3)
    results = list(hec.deliver(items(7)))
    assert [r.status for r in results] == ["delivered"] * 7 and not any(r.maybe_doubled for r in results)
    assert stored(server) == Counter(ids(7))
    assert len(server.requests) == 3


def test_all_collectors_down_fails_after_retry_for(make):
    hec = make(f"http://127.0.0.1:{closed_port()},http://127.0.0.1:{closed_port()}", retry_for=0.3)
    results = list(hec.deliver(items(2)))
    assert [(r.status, r.maybe_doubled) for r in results] == [("failed", False)] * 2
    assert "connection refused" in results[0].reason


# -- TLS ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throwaway CA and a 127.0.0.1 server certificate it signed (never committed)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "throwaway test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "server.pem").write_bytes(cert.public_bytes(pem))
    (d / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    return {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key")}


@pytest.fixture
def tls_server(tls_files):
    with HECServer(token=TOKEN, tls=(tls_files["cert"], tls_files["key"])) as s:
        yield s


def test_tls_with_the_ca_bundle(tls_server, tls_files, make):
    assert tls_server.url.startswith("https://127.0.0.1:")
    hec = make(tls_server.url, verify=tls_files["ca"])
    assert [r.status for r in hec.deliver(items(3))] == ["delivered"] * 3
    assert stored(tls_server) == Counter(ids(3))
    assert hec.check() == []


def test_tls_untrusted_certificate_fails_cleanly(tls_server, make):
    hec = make(tls_server.url, verify=True)
    with pytest.raises(HECFatalError) as exc:
        list(hec.deliver(items(2)))
    msg = str(exc.value)
    assert "\n" not in msg and "TLS certificate verification failed" in msg
    assert "self-signed certificate in certificate chain" in msg or "unable to get local issuer" in msg, msg
    assert [o.id for o in exc.value.pending] == ids(2)
    assert stored(tls_server) == Counter()
    assert hec.check()[0].startswith(f"{tls_server.url}: cannot reach HEC: TLS certificate verification failed")


def test_tls_verify_off_works_and_warns_once(tls_server, make, logs, recwarn):
    hec = make(tls_server.url, verify=False, max_batch_events=1)
    assert [r.status for r in hec.deliver(items(3))] == ["delivered"] * 3
    assert hec.health()["ok"] is True
    assert sum("verification is OFF" in line for line in logs) == 1
    assert len(recwarn) == 0  # urllib3's per-request InsecureRequestWarning is not repeated at the user
    assert stored(tls_server) == Counter(ids(3))


# -- rate limit -----------------------------------------------------------------------------------

def test_max_eps_spreads_batches(server, make):
    t0 = time.monotonic()
    results = list(make(server.url, max_eps=40).deliver(items(100)))
    elapsed = time.monotonic() - t0
    assert [r.status for r in results] == ["delivered"] * 100
    assert [r["events"] for r in server.requests] == [40, 40, 20]
    assert 1.5 <= elapsed < 3.0  # 100 events at 40/s: the first batch is free, then 1 s per 40
