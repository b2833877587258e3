"""SplunkHEC against a real HEC-speaking server on 127.0.0.1, and that server's own behaviour."""
import gzip
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from hec_server import DEFAULT_TOKEN, HECServer
from oai_to_circuit.errors import ConfigError
from oai_to_circuit.splunk_hec import Outgoing, SplunkHEC, collector_urls

HERE = Path(__file__).resolve().parent
AUTH = {"Authorization": f"Splunk {DEFAULT_TOKEN}"}


def outgoing(n, pad=0):
    return [Outgoing(f"e{i}", json.dumps({"event": {"id": f"e{i}", "pad": "x" * pad}},
                                         separators=(",", ":")).encode()) for i in range(n)]


# -- collector URLs ------------------------------------------------------------------------

@pytest.mark.parametrize("setting", [
    "https://splunk.example.com:8088",
    "https://splunk.example.com:8088/",
    "https://splunk.example.com:8088/services/collector",
    "https://splunk.example.com:8088/services/collector/",
    "https://splunk.example.com:8088/services/collector/event",
    "https://splunk.example.com:8088/services/collector/event/",
    "https://splunk.example.com:8088/services/collector/event/1.0",
    "  https://splunk.example.com:8088/services/collector/event  ",
])
def test_collector_url_forms_all_mean_the_event_endpoint(setting):
    assert collector_urls(setting) == ["https://splunk.example.com:8088/services/collector/event"]


def test_collector_urls_comma_list_keeps_order_and_drops_duplicates():
    got = collector_urls("http://a:8088, https://b:8088/services/collector,http://a:8088/services/collector/event")
    assert got == ["http://a:8088/services/collector/event", "https://b:8088/services/collector/event"]


def test_collector_url_behind_a_path_prefix():
    assert collector_urls("https://lb.example.com/splunk/services/collector") == \
        ["https://lb.example.com/splunk/services/collector/event"]


@pytest.mark.parametrize("bad", [
    "", " , ", "splunk.example.com:8088", "ftp://splunk.example.com", "https://",
    "https://splunk.example.com:8088/services/collectr", "https://splunk.example.com:8088/services/collector/raw",
    "https://user:secret@splunk.example.com:8088", "https://splunk.example.com:8088?token=abc",
    "https://splunk.example.com:99999",
])
def test_bad_collector_urls_raise_one_line_config_error(bad):
    with pytest.raises(ConfigError) as exc:
        collector_urls(bad)
    msg = str(exc.value)
    assert "\n" not in msg and msg
    assert "secret" not in msg and "token=abc" not in msg


# -- the operator guide's snippet ------------------------------------------------------------

def test_operator_guide_snippet_sends_exactly_this_event(hec_server, monkeypatch):
    monkeypatch.setenv("SPLUNK_HEC_URL", hec_server.url + "/services/collector/event")
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", DEFAULT_TOKEN)
    hec = SplunkHEC(url=os.getenv("SPLUNK_HEC_URL"), token=os.getenv("SPLUNK_HEC_TOKEN"))
    ok = hec.send_usage_event(subkey="egai-prd-sales-backfill", model="gpt-4o-mini", requests=0, prompt_tokens=0,
                              completion_tokens=0, total_tokens=3683, timestamp="2026-01-15T00:00:00Z",
                              backfill=True)
    hec.close()
    assert ok is True
    expected_hash = "sha256:" + hashlib.sha256(b"egai-prd-sales-backfill").hexdigest()[:16]
    assert hec_server.events == [{
        "time": 1768435200.0,
        "host": socket.gethostname(),
        "source": "oai-to-circuit",
        "sourcetype": "llm:usage",
        "index": "oai_circuit",
        "event": {
            "subkey": expected_hash,
            "model": "gpt-4o-mini",
            "requests": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 3683,
            "timestamp": "2026-01-15T00:00:00Z",
            "backfill": True,
        },
    }]
    assert len(hec_server.requests) == 1 and hec_server.requests[0]["status"] == 200


@pytest.mark.parametrize("ts, epoch, iso", [
    ("2026-01-15T00:00:00+02:00", 1768428000.0, "2026-01-14T22:00:00Z"),
    ("2026-01-15T00:00:00", 1768435200.0, "2026-01-15T00:00:00Z"),  # naive = UTC
    ("2026-01-15T00:00:00.250000Z", 1768435200.25, "2026-01-15T00:00:00.250000Z"),
])
def test_timestamp_forms(ts, epoch, iso):
    hec = SplunkHEC("http://127.0.0.1:9", "t", host="h")
    ev = hec.usage_event("k", "m", timestamp=ts, team="x")
    assert (ev["time"], ev["event"]["timestamp"], ev["event"]["team"]) == (epoch, iso, "x")
    assert "backfill" not in ev["event"]


def test_milliseconds_are_not_taken_for_seconds():
    hec = SplunkHEC("http://127.0.0.1:9", "t")
    with pytest.raises(ValueError, match="milliseconds"):
        hec.usage_event("k", "m", timestamp=1768435200000)


def test_dry_run_writes_the_body_and_sends_nothing(hec_server, capsys):
    hec = SplunkHEC(hec_server.url, DEFAULT_TOKEN, dry_run=True, host="h")
    assert hec.send_usage_event("egai-prd-sales-backfill", "gpt-4o-mini", total_tokens=5,
                                timestamp="2026-01-15T00:00:00Z") is True
    out = capsys.readouterr().out
    assert json.loads(out)["event"]["total_tokens"] == 5 and json.loads(out)["time"] == 1768435200.0
    results = list(hec.deliver(outgoing(3)))
    assert [r.status for r in results] == ["dry_run"] * 3
    assert hec_server.requests == [] and hec_server.events == []


def test_repr_never_shows_the_token():
    hec = SplunkHEC("http://127.0.0.1:9", "sekrit-token-value")
    assert "sekrit-token-value" not in repr(hec) and "sekrit-token-value" not in str(hec)
    assert repr(hec).startswith("SplunkHEC(urls=['http://127.0.0.1:9/services/collector/event']")


# -- batching and gzip -------------------------------------------------------------------------

def test_batches_are_bounded_by_event_count(hec_server):
    with SplunkHEC(hec_server.url, DEFAULT_TOKEN, max_batch_events=5) as hec:
        results = list(hec.deliver(outgoing(23)))
    assert sorted(r.id for r in results) == sorted(f"e{i}" for i in range(23))
    assert {r.status for r in results} == {"delivered"}
    assert [r["events"] for r in hec_server.requests] == [5, 5, 5, 5, 3]
    assert [e["event"]["id"] for e in hec_server.events] == [f"e{i}" for i in range(23)]


def test_batches_are_bounded_by_uncompressed_bytes(hec_server):
    items = outgoing(10, pad=80)
    size = len(items[0].body)
    assert all(len(i.body) == size for i in items)
    with SplunkHEC(hec_server.url, DEFAULT_TOKEN, max_batch_bytes=3 * size + 2) as hec:
        list(hec.deliver(items))
    assert [r["events"] for r in hec_server.requests] == [3, 3, 3, 1]
    assert all(r["bytes"] < 3 * size + 2 for r in hec_server.requests)  # gzip made them smaller still


def test_deliver_is_lazy(hec_server):
    consumed = []

    def gen():
        for o in outgoing(10):
            consumed.append(o.id)
            yield o

    with SplunkHEC(hec_server.url, DEFAULT_TOKEN, max_batch_events=4) as hec:
        it = hec.deliver(gen())
        first = next(it)
        assert first.status == "delivered"
        assert len(consumed) == 4  # one batch read, nothing further ahead
        assert len(list(it)) == 9


@pytest.mark.parametrize("use_gzip", [True, False])
def test_gzip_header_matches_the_body(hec_server, use_gzip):
    with SplunkHEC(hec_server.url, DEFAULT_TOKEN, gzip=use_gzip) as hec:
        list(hec.deliver(outgoing(4, pad=200)))
    (req,) = hec_server.requests
    assert req["gzip"] is use_gzip
    assert ("Content-Encoding" in req["headers"]) is use_gzip
    raw_len = sum(len(o.body) for o in outgoing(4, pad=200)) + 3
    assert (req["bytes"] < raw_len) if use_gzip else (req["bytes"] == raw_len)
    assert len(hec_server.events) == 4


# -- health and check ------------------------------------------------------------------------

def test_health_reports_ok_and_unhealthy(hec_server):
    with SplunkHEC(hec_server.url, DEFAULT_TOKEN) as hec:
        h = hec.health()
        assert (h["ok"], h["status"], h["text"]) == (True, 200, "HEC is healthy")
        hec_server.set_health(False)
        h = hec.health()
        assert (h["ok"], h["status"]) == (False, 503)
        assert hec.check() == [f"{hec_server.url}: HEC health check failed: HEC is unhealthy, queues are full "
                               "(HTTP 503)"]


def test_health_of_unreachable_collector():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with SplunkHEC(f"http://127.0.0.1:{port}", DEFAULT_TOKEN) as hec:
        h = hec.health()
        assert (h["ok"], h["status"], h["text"]) == (False, None, "connection refused")
        assert hec.check() == [f"http://127.0.0.1:{port}: cannot reach HEC: connection refused"]


def test_https_to_a_plain_http_collector_says_what_is_wrong_in_one_line(hec_server):
    """OpenSSL's WRONG_VERSION_NUMBER, not requests' nested retry text."""
    url = hec_server.url.replace("http://", "https://")
    with SplunkHEC(url, DEFAULT_TOKEN, retry_for=0) as hec:
        assert hec.check() == [f"{url}: cannot reach HEC: TLS error: wrong version number: the collector does"
                               " not speak TLS on that port (HEC with SSL off wants http://)"]


def test_check_good_token_and_index_sends_no_event(hec_server):
    with SplunkHEC(hec_server.url, DEFAULT_TOKEN) as hec:
        assert hec.check() == []
    assert hec_server.events == []
    assert [r["status"] for r in hec_server.requests] == [200, 400, 400]


def test_check_bad_token():
    with HECServer(token="the-right-token") as server, SplunkHEC(server.url, "a-wrong-token") as hec:
        problems = hec.check()
    assert problems == [f"{server.url}/services/collector/event: HEC token rejected: Invalid token "
                        "(HTTP 403, code 4); check SPLUNK_HEC_TOKEN"]
    assert "a-wrong-token" not in problems[0]


def test_check_wrong_index():
    with HECServer(indexes={"main"}) as server, SplunkHEC(server.url, DEFAULT_TOKEN, index="oai_circuit") as hec:
        problems = hec.check()
    assert len(problems) == 1
    assert "'oai_circuit'" in problems[0] and "code 7" in problems[0]
    assert server.events == []


# -- the test server itself --------------------------------------------------------------------

def test_server_accepts_concatenated_and_gzipped_bodies(hec_server):
    url = hec_server.url + "/services/collector"
    r = requests.post(url, data=b'{"event":1}{"event":2}\n  {"event":3}', headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"text": "Success", "code": 0})
    r = requests.post(hec_server.url + "/services/collector/event/1.0", data=gzip.compress(b'{"event":4}'),
                      headers=dict(AUTH, **{"Content-Encoding": "gzip"}))
    assert r.status_code == 200
    assert [e["event"] for e in hec_server.events] == [1, 2, 3, 4]
    assert [(q["events"], q["gzip"]) for q in hec_server.requests] == [(3, False), (1, True)]
    assert all("Authorization" not in q["headers"] for q in hec_server.requests)


@pytest.mark.parametrize("body, headers, status, reply", [
    (b"", AUTH, 400, {"text": "No data", "code": 5}),
    (b'{"event":1}', {}, 401, {"text": "Token is required", "code": 2}),
    (b'{"event":1}', {"Authorization": "Splunk nope"}, 403, {"text": "Invalid token", "code": 4}),
    (b'{"event":1}{"x":1}', AUTH, 400, {"text": "Event field is required", "code": 12, "invalid-event-number": 1}),
    (b'{"event":"  "}', AUTH, 400, {"text": "Event field cannot be blank", "code": 13, "invalid-event-number": 0}),
    (b'{"event":1}{oops', AUTH, 400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 1}),
    (b'{"event":1,"fields":{"a":{"b":1}}}', AUTH, 400,
     {"text": "Error in handling indexed fields", "code": 15, "invalid-event-number": 0}),
])
def test_server_error_replies(hec_server, body, headers, status, reply):
    r = requests.post(hec_server.url + "/services/collector/event", data=body, headers=headers)
    assert (r.status_code, r.json()) == (status, reply)
    stored = [e["event"] for e in hec_server.events]
    assert stored == ([1] if reply.get("invalid-event-number") == 1 else [])  # the prefix, as Splunk indexes it


def test_server_acks_per_channel_and_forgets_after_true():
    chan = "6b0a3f34-8e1c-4cf4-9d1b-1d3b7b2a9c10"
    with HECServer(ack=True) as server:
        ev = server.url + "/services/collector/event"
        assert requests.post(ev, data=b'{"event":1}', headers=AUTH).json() == \
            {"text": "Data channel is missing", "code": 10}
        assert requests.post(ev, data=b'{"event":1}', headers=dict(AUTH, **{"X-Splunk-Request-Channel": "x"})
                             ).json() == {"text": "Invalid data channel", "code": 11}
        assert requests.post(ev + "?channel=" + chan, data=b'{"event":1}', headers=AUTH).json()["ackId"] == 0
        assert requests.post(ev, data=b'{"event":2}', headers=dict(AUTH, **{"X-Splunk-Request-Channel": chan})
                             ).json()["ackId"] == 1
        ack = server.url + "/services/collector/ack?channel=" + chan
        assert requests.post(ack, json={"acks": [0, 1, 2]}, headers=AUTH).json() == \
            {"acks": {"0": True, "1": True, "2": False}}
        assert requests.post(ack, json={"acks": [0, 1]}, headers=AUTH).json() == {"acks": {"0": False, "1": False}}
    with HECServer() as server:
        r = requests.post(server.url + "/services/collector/ack?channel=" + chan, json={"acks": [0]}, headers=AUTH)
        assert r.json() == {"text": "ACK is disabled", "code": 14}


def test_server_behind_a_sticky_load_balancer_keeps_acks_on_the_cookies_indexer():
    chan = "6b0a3f34-8e1c-4cf4-9d1b-1d3b7b2a9c10"
    headers = dict(AUTH, **{"X-Splunk-Request-Channel": chan})
    with HECServer(ack=True, sticky_cookie="AWSALB") as server:
        ev, ack = server.url + "/services/collector/event", server.url + "/services/collector/ack"
        r = requests.post(ev, data=b'{"event":1}', headers=headers)
        assert r.json()["ackId"] == 0 and r.headers["Set-Cookie"].endswith("; Path=/")
        indexer = r.cookies["AWSALB"]
        sticky = dict(headers, Cookie=f"AWSALB={indexer}")
        r = requests.post(ack, json={"acks": [0]}, headers=headers)  # no cookie: lands on another indexer
        assert r.json() == {"acks": {"0": False}} and r.cookies["AWSALB"] != indexer
        r = requests.post(ack, json={"acks": [0]}, headers=dict(headers, Cookie="AWSALB=unknown"))
        assert r.json() == {"acks": {"0": False}} and r.cookies["AWSALB"] not in (indexer, "unknown")
        r = requests.post(ack, json={"acks": [0]}, headers=sticky)
        assert r.json() == {"acks": {"0": True}} and "Set-Cookie" not in r.headers
    assert [e["event"] for e in server.events] == [1]
    routes = [q["indexer"] for q in server.requests]
    assert routes[0] == routes[3] == indexer and len(set(routes)) == 3


def test_server_runs_as_a_process_and_summarises_on_sigterm():
    proc = subprocess.Popen([sys.executable, str(HERE / "hec_server.py"), "--port", "0", "--token", "tok"],
                            stdout=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline().split()
        assert ready[0] == "READY" and ready[1].startswith("http://127.0.0.1:")
        r = requests.post(ready[1] + "/services/collector", data=b'{"event":1}{"event":2}',
                          headers={"Authorization": "Splunk tok"})
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out.strip().startswith('SUMMARY events=2 requests=1 bytes=22 status={"200": 1}')


def test_a_token_pasted_with_an_en_dash_is_one_clear_config_error():
    from oai_to_circuit.errors import ConfigError
    from oai_to_circuit.splunk_hec import SplunkHEC

    bad = "11111111\u20132222-4333-8444-555555555555"
    with pytest.raises(ConfigError) as exc:
        SplunkHEC("https://127.0.0.1:8088", bad)
    assert "not printable ASCII" in str(exc.value) and bad not in str(exc.value)


def test_plain_http_collector_warns_once_that_the_token_is_unencrypted():
    from oai_to_circuit.splunk_hec import SplunkHEC

    lines = []
    SplunkHEC("http://127.0.0.1:8088", "11111111-2222-4333-8444-555555555555", log=lines.append)
    assert lines == ["warning: SPLUNK_HEC_URL is plain http: the token and the events travel unencrypted"]
