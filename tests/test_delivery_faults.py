"""Fault injection: what HEC stores, what the client reports, for every failure HEC and its LBs produce.

Every test runs SplunkHEC through the ``deliver`` fixture and ends in ``check()``: the exact
multiset of events the server stored, counted by backfill_id, against what the client said of
each event (delivered, failed, pending after a fatal stop, flagged as a possible double).
In every test (``no_token_anywhere``) the token is in no log line, Result reason, error message,
stdout/stderr, log record or file under tmp_path; ``test_token_is_nowhere_after_any_fault`` runs
each fault kind through the whole backfill (ledger, dead letters, report) for the same search.
"""
import datetime as dt
import io
import ipaddress
import json
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Optional

import pytest
import requests

from hec_server import HECServer
from oai_to_circuit.backfill import BackfillOptions, run_backfill
from oai_to_circuit.splunk_hec import HECFatalError, Outgoing, SplunkHEC

TOKEN = "c0ffee00-dead-4bee-8f00-5ec2e7000001"
ACK = "/services/collector/ack"


def event(bid, i=0, pad=0):
    """One HEC event object; the server's store is counted by its backfill_id."""
    return {"time": 1768435200.0 + i, "index": "oai_circuit", "event": {"backfill_id": bid, "pad": "x" * pad}}


def items(n, prefix="e", pad=0):
    return [Outgoing(f"{prefix}{i}", json.dumps(event(f"{prefix}{i}", i, pad), separators=(",", ":")).encode())
            for i in range(n)]


def ids(n, prefix="e"):
    return [f"{prefix}{i}" for i in range(n)]


def stored_by_id(*servers):
    return Counter(e["event"]["backfill_id"] for s in servers for e in s.events)


@dataclass
class Run:
    """One ``deliver()``: the input, what it consumed, one Result per id, and how it stopped."""

    sent: list
    consumed: list = field(default_factory=list)
    results: dict = field(default_factory=dict)
    error: Optional[HECFatalError] = None
    unconfirmed: set = field(default_factory=set)  # after a fatal stop: ids HEC may hold all the same

    @property
    def pending(self) -> list:
        return [o.id for o in self.error.pending] if self.error else []


def check(run, *servers, stored, failed=(), pending=(), flagged=()):
    """The stored vs sent vs flagged check of every fault test; returns the Results by id.

    ``stored``: the exact multiset (by backfill_id) the servers hold; ``failed``/``pending``/``flagged``:
    exactly the ids reported failed, left pending by a fatal stop (in order) and flagged as possible
    doubles. Then, counting by backfill_id: every consumed event has one fate, nothing delivered is
    missing, and nothing is stored twice, or stored although not delivered, unless it was flagged.
    """
    counts = stored_by_id(*servers)
    assert counts == Counter(stored)
    res = run.results
    assert {r.status for r in res.values()} <= {"delivered", "failed"}
    assert {i for i, r in res.items() if r.status == "failed"} == set(failed)
    assert run.pending == list(pending)
    maybe = {i for i, r in res.items() if r.maybe_doubled} | run.unconfirmed
    assert maybe == set(flagged)
    assert Counter(run.consumed) == Counter(list(res) + run.pending), "each consumed event: one Result or pending"
    assert run.error or run.consumed == [o.id for o in run.sent], "every event taken unless stopped"
    delivered = {i for i, r in res.items() if r.status == "delivered"}
    assert set(counts) <= {o.id for o in run.sent}
    assert not delivered - set(counts), "missing although delivered"
    assert not {i for i, n in counts.items() if n > 1} - maybe, "doubled without a flag"
    assert not set(counts) - delivered - maybe, "stored although reported not delivered, without a flag"
    return res


def assert_no_token(texts, root):
    """The token is in none of the texts and in no file under root."""
    for text in texts:
        assert TOKEN not in text
    for f in root.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f


@pytest.fixture
def logs():
    """The log lines of every client made in the test (verbose on)."""
    return []


@pytest.fixture(autouse=True)
def no_token_anywhere(logs, capfd, caplog, tmp_path):
    """Texts the runs gave out (Result reasons, error messages, reports); at teardown neither they, the log
    lines, stdout/stderr, any log record (urllib3's DEBUG ones too) nor any file under tmp_path holds the token."""
    caplog.set_level(logging.DEBUG)
    shown = []
    yield shown
    out, err = capfd.readouterr()
    assert_no_token(shown + logs + [out, err, caplog.text] + [r.getMessage() for r in caplog.records], tmp_path)


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
def deliver(no_token_anywhere):
    """``deliver(hec, items, on_take={id: fn})``: a Run; fn is called as deliver() takes that id from the input."""
    shown = no_token_anywhere

    def run_it(hec, batch, on_take=None):
        run = Run(list(batch))

        def source():
            for o in run.sent:
                run.consumed.append(o.id)
                if on_take and o.id in on_take:
                    on_take[o.id]()
                yield o

        try:
            for r in hec.deliver(source()):
                assert r.id not in run.results, f"a second Result for {r.id}"
                run.results[r.id] = r
                shown.append(r.reason or "")
        except HECFatalError as exc:
            run.error = exc
            run.unconfirmed = hec.unconfirmed_may_have_arrived()
            shown.extend([str(exc), repr(exc)])
        return run

    return run_it


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

def test_503_three_times_then_ok(server, make, deliver, logs):
    server.fail_next(3)
    check(deliver(make(server.url, max_batch_events=4), items(10)), server, stored=ids(10))
    assert [r["status"] for r in server.requests] == [503, 503, 503, 200, 200, 200]
    posts = [line for line in logs if line.startswith("POST ")]
    assert len(posts) == 6
    assert posts[0].startswith(f"POST {server.url}/services/collector/event events=4 bytes=")
    assert " gzip=" in posts[0] and "-> HTTP 503 code=9 " in posts[0] and posts[0].endswith("s")
    assert "-> HTTP 200 code=0 " in posts[3]


def test_wrong_path_is_fatal(server, make, deliver):
    run = deliver(make(server.url + "/splunk/services/collector"), items(1))
    assert "not a HEC endpoint" in str(run.error)
    check(run, server, stored=[], pending=["e0"])
    assert [(r["path"], r["status"]) for r in server.requests] == [("/splunk/services/collector/event", 404)]


@pytest.mark.parametrize("status, code", [(503, 9), (429, 9)])
def test_retry_after_is_honoured(server, make, deliver, status, code):
    server.fail_next(1, status=status, code=code, retry_after=1)
    t0 = time.monotonic()
    run = deliver(make(server.url, backoff_base=0.001), items(3))
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 2.5  # Retry-After: 1, while the backoff alone would be milliseconds
    check(run, server, stored=ids(3))


def test_retries_end_after_retry_for_and_fail_with_the_last_reason(server, make, deliver):
    server.fail_next(1000, status=500, code=8, text="Internal server error")
    t0 = time.monotonic()
    run = deliver(make(server.url, retry_for=0.5), items(3))
    assert time.monotonic() - t0 < 1.5
    reason = check(run, server, stored=[], failed=ids(3))["e0"].reason
    assert reason.startswith("gave up after ")
    assert "(--retry-for 0.5s would pass before the next): Internal server error (HTTP 500, code 8" in reason


def test_502_html_from_a_load_balancer(server, make, deliver, logs):
    server.fail_next(2, status=502, html=True)
    server.fail_next(1, status=504, html=True)
    check(deliver(make(server.url), items(5)), server, stored=ids(5))
    assert [r["status"] for r in server.requests] == [502, 502, 504, 200]
    assert sum("HTTP 502 code=None" in line for line in logs) == 2


# -- ambiguous sends ------------------------------------------------------------------------------

def test_timeout_after_the_body_was_stored_resends_and_flags(server, make, deliver):
    server.delay_next(1.0)
    run = deliver(make(server.url, timeout=0.4, max_batch_events=4), items(8))
    check(run, server, stored=ids(8) + ids(4), flagged=ids(4))  # first batch twice, flagged; the rest once


@pytest.mark.parametrize("store, copies", [(False, 1), (True, 2)])
def test_dropped_connection_resends_and_flags(server, make, deliver, store, copies):
    server.drop_next(1, store=store)
    run = deliver(make(server.url, max_batch_events=3), items(6))
    check(run, server, stored=ids(6) + ids(3) * (copies - 1), flagged=ids(3))
    assert [r["status"] for r in server.requests] == [None, 200, 200]


# -- 413 ------------------------------------------------------------------------------------------

def test_413_splits_until_batches_fit_and_delivers_each_once(make, deliver):
    with HECServer(token=TOKEN, max_content_length=1500) as server:
        batch = items(40, pad=150)
        assert sum(len(o.body) for o in batch) > 4 * 1500
        check(deliver(make(server.url, gzip=False), batch), server, stored=ids(40))
        statuses = [r["status"] for r in server.requests]
        assert statuses[0] == 413 and statuses.count(200) >= 4
        assert all(r["bytes"] <= 1500 for r in server.requests if r["status"] == 200)


def test_413_single_oversized_event_fails_with_its_size(make, deliver):
    with HECServer(token=TOKEN, max_content_length=1500) as server:
        big = Outgoing("big", json.dumps(event("big", pad=3000)).encode())
        run = deliver(make(server.url, gzip=False), items(6) + [big] + items(6, prefix="f"))
        results = check(run, server, stored=ids(6) + ids(6, "f"), failed=["big"])
        assert results["big"].reason == f"event too large for HEC max_content_length: {len(big.body)} bytes"


# -- rejected events -----------------------------------------------------------------------------

def test_invalid_event_at_k(server, make, deliver):
    server.reject_event_at(3)
    results = check(deliver(make(server.url), items(10)), server, stored=set(ids(10)) - {"e3"}, failed=["e3"])
    assert results["e3"].reason == "Invalid data format (HTTP 400, code 6)"
    assert [(r["status"], r["events"]) for r in server.requests] == [(400, 10), (200, 6)]


def test_event_without_event_field_is_failed_alone(server, make, deliver):
    batch = items(3) + [Outgoing("bad", b'{"time":1768435200.0,"fields":{"backfill_id":"bad"}}')] + items(3, "f")
    results = check(deliver(make(server.url), batch), server, stored=ids(3) + ids(3, "f"), failed=["bad"])
    assert results["bad"].reason == "Event field is required (HTTP 400, code 12)"


def test_4xx_without_event_number_is_never_resent_unchanged(server, make, deliver):
    server.fail_next(3, status=400, code=6, text="Invalid data format")  # no invalid-event-number
    results = check(deliver(make(server.url), items(4)), server, stored=["e1", "e2", "e3"], failed=["e0"])
    assert results["e0"].reason == "Invalid data format (HTTP 400, code 6)"
    assert [r["events"] for r in server.requests] == [4, 2, 1, 1, 2]  # halves until the bad one stands alone


# -- fatal configuration errors -------------------------------------------------------------------

def test_wrong_token_is_fatal_with_pending_and_no_token_in_message(server, make, deliver):
    hec = make(server.url, token="wrong-0000-token-value", max_batch_events=5)
    run = deliver(hec, items(20))
    check(run, server, stored=[], pending=ids(5))
    assert run.consumed == ids(5)
    err = run.error
    assert err.exit_code == 2
    assert "wrong-0000-token-value" not in str(err) and TOKEN not in str(err)
    assert "\n" not in str(err) and "token is not valid" in str(err) and "code 4" in str(err)


@pytest.mark.parametrize("status, code, text, phrase", [
    (401, 2, "Token is required", "no token was sent"),
    (401, 3, "Invalid authorization", "Authorization header"),
    (403, 1, "Token disabled", "the token is disabled"),
    (400, 21, "Invalid token", "the token is not valid"),
])
def test_token_errors_are_fatal(server, make, deliver, status, code, text, phrase):
    server.fail_next(1, status=status, code=code, text=text)
    run = deliver(make(server.url, max_batch_events=2), items(5))
    assert phrase in str(run.error) and f"code {code}" in str(run.error)
    check(run, server, stored=[], pending=["e0", "e1"])
    assert [r["status"] for r in server.requests] == [status]  # stopped at once: no retry


def test_fatal_after_some_delivered_leaves_only_the_rest_pending(server, make, deliver):
    hec = make(server.url, max_batch_events=3)
    run = deliver(hec, items(9), on_take={"e3": lambda: server.fail_next(1, status=403, code=4, text="Invalid token")})
    check(run, server, stored=ids(3), pending=["e3", "e4", "e5"])
    assert list(run.results) == ids(3) and run.consumed == ids(6)


def test_incorrect_index_is_fatal_and_names_the_index(make, deliver):
    with HECServer(token=TOKEN, indexes={"main"}) as server:
        run = deliver(make(server.url), items(4))
        assert "'oai_circuit'" in str(run.error) and "code 7" in str(run.error)
        check(run, server, stored=[], pending=ids(4))


# -- indexer acknowledgement ------------------------------------------------------------------------

def test_acks_on_time(make, deliver):
    with HECServer(token=TOKEN, ack=True) as server:
        hec = make(server.url, ack=True, max_batch_events=3)
        check(deliver(hec, items(9)), server, stored=ids(9))
        assert {r["channel"] for r in server.requests} == {hec.channel}
        assert sum(r["path"] == ACK for r in server.requests) >= 1


def test_late_acks_within_ack_timeout(make, deliver):
    with HECServer(token=TOKEN, ack=True) as server:
        server.ack_delay(0.6)
        t0 = time.monotonic()
        run = deliver(make(server.url, ack=True, ack_timeout=5.0), items(4))
        assert time.monotonic() - t0 >= 0.6
        check(run, server, stored=ids(4))
        assert [r["path"] for r in server.requests].count("/services/collector/event") == 1


def test_acks_never_come_resend_once_then_fail(make, deliver, logs):
    with HECServer(token=TOKEN, ack=True) as server:
        server.ack_never()
        run = deliver(make(server.url, ack=True, ack_timeout=0.4), items(4))
        results = check(run, server, stored=ids(4) * 2, failed=ids(4), flagged=ids(4))
        assert {r.reason for r in results.values()} == {"not acknowledged within 0.4s"}
        assert [r["path"] for r in server.requests].count("/services/collector/event") == 2
        assert sum("resending 4 events once" in line for line in logs) == 1


def test_code_10_turns_acks_on(make, deliver, logs):
    with HECServer(token=TOKEN, ack=True) as server:
        hec = make(server.url)  # ack=None: auto
        check(deliver(hec, items(5)), server, stored=ids(5))
        first, second = server.requests[:2]
        assert (first["status"], first["channel"]) == (400, None)
        assert (second["status"], second["channel"]) == (200, hec.channel)
        assert any(r["path"] == ACK for r in server.requests)
        assert sum("code 10" in line for line in logs) == 1


def test_code_10_with_acks_off_is_fatal(make, deliver):
    with HECServer(token=TOKEN, ack=True) as server:
        run = deliver(make(server.url, ack=False), items(2))
        assert "code 10" in str(run.error) and "acks are turned off" in str(run.error)
        check(run, server, stored=[], pending=["e0", "e1"])


def test_forced_acks_on_a_token_without_acks_fall_back(server, make, deliver, logs):
    check(deliver(make(server.url, ack=True, max_batch_events=2), items(4)), server, stored=ids(4))
    assert sum("acknowledgement is disabled" in line for line in logs) == 1
    assert not any(r["path"] == ACK for r in server.requests)


@pytest.mark.parametrize("ack", [True, None])
def test_acks_behind_a_cookie_sticky_load_balancer(make, deliver, ack):
    """Splunk's load-balancing guide: with HEC acks behind a load balancer, enable cookie sticky sessions.

    An ack id exists only on the indexer that took the data on that channel: the client must keep
    one channel and send the LB's cookie (here AWSALB, set on the first reply) with every request.
    ack=True: the first reply is a 503 that sets the cookie; ack=None: it is the code 10 reply.
    """
    with HECServer(token=TOKEN, ack=True, sticky_cookie="AWSALB") as server:
        if ack:
            server.fail_next(1)
        hec = make(server.url, ack=ack, max_batch_events=3)
        check(deliver(hec, items(9)), server, stored=ids(9))
        first, *later = server.requests
        assert first["status"] == (503 if ack else 400) and "Cookie" not in first["headers"]
        assert [r["headers"].get("Cookie") for r in later] == [f"AWSALB={first['indexer']}"] * len(later)
        assert {r["indexer"] for r in server.requests} == {first["indexer"]}
        assert {r["channel"] for r in later} == {hec.channel}
        assert [r["path"] for r in later].count("/services/collector/event") == 3 and later[-1]["path"] == ACK


def test_a_client_without_the_lb_cookie_never_sees_its_acks(make, deliver):
    """The control for the test above: refusing cookies, every request lands on another indexer."""
    with requests.Session() as session, HECServer(token=TOKEN, ack=True, sticky_cookie="AWSALB") as server:
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        run = deliver(make(server.url, ack=True, ack_timeout=0.1, session=session), items(3))
        check(run, server, stored=ids(3) * 2, failed=ids(3), flagged=ids(3))
        assert len({r["indexer"] for r in server.requests}) == len(server.requests)


# -- failover -------------------------------------------------------------------------------------

def test_failover_from_a_closed_port(server, make, deliver):
    dead = f"http://127.0.0.1:{closed_port()}"
    check(deliver(make(f"{dead},{server.url}", max_batch_events=3), items(7)), server, stored=ids(7))
    assert len(server.requests) == 3


def test_all_collectors_down_fails_after_retry_for(make, deliver):
    hec = make(f"http://127.0.0.1:{closed_port()},http://127.0.0.1:{closed_port()}", retry_for=0.3)
    results = check(deliver(hec, items(2)), stored=[], failed=ids(2))
    assert "connection refused" in results["e0"].reason


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


def test_tls_with_the_ca_bundle(tls_server, tls_files, make, deliver):
    assert tls_server.url.startswith("https://127.0.0.1:")
    hec = make(tls_server.url, verify=tls_files["ca"])
    check(deliver(hec, items(3)), tls_server, stored=ids(3))
    assert hec.check() == []


def test_tls_untrusted_certificate_fails_cleanly(tls_server, make, deliver):
    hec = make(tls_server.url, verify=True)
    run = deliver(hec, items(2))
    msg = str(run.error)
    assert "\n" not in msg and "TLS certificate verification failed" in msg
    assert "self-signed certificate in certificate chain" in msg or "unable to get local issuer" in msg, msg
    check(run, tls_server, stored=[], pending=ids(2))
    assert hec.check()[0].startswith(f"{tls_server.url}: cannot reach HEC: TLS certificate verification failed")


def test_tls_verify_off_works_and_warns_once(tls_server, make, deliver, logs, recwarn):
    hec = make(tls_server.url, verify=False, max_batch_events=1)
    check(deliver(hec, items(3)), tls_server, stored=ids(3))
    assert hec.health()["ok"] is True
    assert sum("verification is OFF" in line for line in logs) == 1
    assert len(recwarn) == 0  # urllib3's per-request InsecureRequestWarning is not repeated at the user


# -- rate limit -----------------------------------------------------------------------------------

def test_max_eps_spreads_batches(server, make, deliver):
    t0 = time.monotonic()
    run = deliver(make(server.url, max_eps=40), items(100))
    elapsed = time.monotonic() - t0
    check(run, server, stored=ids(100))
    assert [r["events"] for r in server.requests] == [40, 40, 20]
    assert 1.5 <= elapsed < 3.0  # 100 events at 40/s: the first batch is free, then 1 s per 40


# -- the token, through the whole backfill, after every kind of fault ------------------------------

SCENARIOS = {  # name: (server options, fault set-up, client options; collectors: "live" and/or "dead")
    "503-then-ok": ({}, lambda s: s.fail_next(3), {}),
    "502-504-html": ({}, lambda s: (s.fail_next(2, status=502, html=True), s.fail_next(1, status=504, html=True)), {}),
    "500-until-retry-for": ({}, lambda s: s.fail_next(1000, status=500, code=8, text="Internal server error"),
                            {"retry_for": 0.1}),
    "503-text-echoes-the-token": ({}, lambda s: s.fail_next(1000, text=f"busy; got Authorization: Splunk {TOKEN}"),
                                  {"retry_for": 0.1}),
    "timeout-after-storing": ({}, lambda s: s.delay_next(0.5), {"timeout": 0.2}),
    "drop-after-storing": ({}, lambda s: s.drop_next(1, store=True), {}),
    "413-split-and-too-large": ({"max_content_length": 1500}, None, {"gzip": False}),
    "code-6-at-3": ({}, lambda s: s.reject_event_at(3), {}),
    "acks-late": ({"ack": True}, lambda s: s.ack_delay(0.1), {"ack": True}),
    "acks-never": ({"ack": True}, lambda s: s.ack_never(), {"ack": True, "ack_timeout": 0.1}),
    "code-10-then-acks": ({"ack": True}, None, {}),
    "sticky-lb-acks": ({"ack": True, "sticky_cookie": "AWSALB"}, None, {"ack": True}),
    "401-text-echoes-the-token": ({}, lambda s: s.fail_next(1, status=401, code=3,
                                                            text=f"Invalid authorization: Splunk {TOKEN}"), {}),
    "403-wrong-token": ({"token": "99999999-0000-4000-8000-000000000000"}, None, {}),
    "code-7-index": ({"indexes": {"main"}}, None, {}),
    "failover-from-refused": ({}, None, {"collectors": "dead,live"}),
    "all-refused": ({}, None, {"collectors": "dead", "retry_for": 0.1}),
    "tls-untrusted": ({"tls": True}, None, {"verify": True}),
    "tls-ca-bundle": ({"tls": True}, None, {"verify": "ca"}),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_token_is_nowhere_after_any_fault(name, request, make, no_token_anywhere, tmp_path):
    """Each fault kind through run_backfill (verbose, ndjson out): its stdout, stderr, report, ledger and
    dead letters join what ``no_token_anywhere`` searches; the run must have given every event a fate."""
    server_kw, fault, client_kw = SCENARIOS[name]
    server_kw, client_kw = dict(server_kw), dict(client_kw)
    server_kw.setdefault("token", TOKEN)
    if server_kw.pop("tls", False):
        tls = request.getfixturevalue("tls_files")
        server_kw["tls"] = (tls["cert"], tls["key"])
        if client_kw["verify"] == "ca":
            client_kw["verify"] = tls["ca"]
    n = 12
    pad = 400 if "413" in name else 150  # 413: batches of 4 are over the limit, and b5 alone is too
    bodies = [event(f"b{i}", i, pad=3000 if pad == 400 and i == 5 else pad) for i in range(n)]
    with HECServer(**server_kw) as server:
        if fault:
            fault(server)
        dead = f"http://127.0.0.1:{closed_port()}"
        url = client_kw.pop("collectors", "live").replace("live", server.url).replace("dead", dead)
        out, err = io.StringIO(), io.StringIO()
        opts = BackfillOptions(verbose=True, output="ndjson", ledger_path=str(tmp_path / "ledger.db"),
                               dead_letter_path=str(tmp_path / "dead-letters.ndjson"))
        report = run_backfill(opts, hec=make(url, max_batch_events=4, **client_kw), bodies=bodies,
                              stdout=out, stderr=err)
    no_token_anywhere.extend([out.getvalue(), err.getvalue(), report.render(), report.fatal or ""])
    assert report.delivered + report.failed == n
    assert (tmp_path / "dead-letters.ndjson").exists() == (report.failed > 0)
    assert (tmp_path / "ledger.db").exists()
