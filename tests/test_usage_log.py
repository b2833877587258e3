"""Every era's line shapes (LOG_SHAPES.md), one record per event, the right outcome and time.

Eras A and D come from real journalctl output (test_backfill_e2e.py); eras B and C are
built here line by line from the shapes the service's source writes, with the exact texts of
LOG_SHAPES.md, and run through the same reader the CLI uses.
"""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest

from oai_to_circuit.events import hash_subkey
from oai_to_circuit.journal import ReadStats, read_entries
from oai_to_circuit.usage_log import UsageExtractor, extract

RAW = "user_delta_ptgUzEjfebzJ6sZWdoHIxrXl0gqn87b1"
RAW2 = "team_bravo_9382dffx1kVZQ2tqMnMcLRkBOzZU3G8x"
URL = "http://127.0.0.1:18088/services/collector/event"


class Journal:
    """Writes service lines the way journalctl -o short prints them."""

    def __init__(self, jpid=9864, wpid=9868):
        self.lines = []
        self.jpid = jpid
        self.wpid = wpid

    def _prefix(self, t):
        return datetime.fromtimestamp(int(t), timezone.utc).strftime("%b %d %H:%M:%S") + \
            f" proxy-01 oai-to-circuit[{self.jpid}]: "

    def log(self, t, level, logger, msg, wpid=None):
        asctime = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S,") + f"{int(t * 1000) % 1000:03d}"
        lvl = f"{level}:".ljust(9)
        self.lines.append(self._prefix(t) + f"{lvl} {asctime} - SpawnProcess-1[{wpid or self.wpid:5d}] - "
                          f"{logger:<8} - {msg}")

    def hec(self, t, level, msg, wpid=None):
        self.log(t, level, "oai_to_circuit.splunk_hec", msg, wpid)

    def block(self, t, level, opener, envelope, wpid=None):
        text = json.dumps(envelope, indent=2).splitlines()
        self.hec(t, level, opener + " " + text[0], wpid)
        for line in text[1:]:
            self.lines.append(self._prefix(t) + line)

    def raw(self, line):
        self.lines.append(line)

    def records(self, **kw):
        data = ("\n".join(self.lines) + "\n").encode("utf-8")
        ex = UsageExtractor(timezone.utc)
        stats = ReadStats()

        class Stdin:
            buffer = io.BytesIO(data)

        recs = list(extract(read_entries(["-"], zone=timezone.utc, year=2026, stats=stats, keep=ex.keep,
                                         stdin=Stdin), ex))
        return recs, ex.stats, stats


T0 = 1767800798.737  # 2026-01-07 15:46:38.737 UTC


def envelope(t, subkey, model="gpt-5", p=797, c=909, index="main", **extra):
    ev = {"subkey": subkey, "model": model, "requests": 1, "prompt_tokens": p, "completion_tokens": c,
          "total_tokens": p + c, "timestamp": datetime.fromtimestamp(t - 0.00002, timezone.utc).isoformat(),
          "status_code": 200, "success": True, **extra}
    return {"time": t, "event": ev, "source": "oai-to-circuit", "sourcetype": "llm:usage", "index": index}


def error_envelope(t, subkey, error_type="quota_exceeded", model="gpt-4o"):
    ev = {"event_type": "error", "error_type": error_type,
          "error_message": f"Request quota exceeded for model {model}",
          "timestamp": datetime.fromtimestamp(t, timezone.utc).isoformat(), "subkey": subkey, "model": model}
    return {"time": t, "event": ev, "source": "oai-to-circuit", "sourcetype": "llm:usage:error", "index": "main"}


def test_era_b_debug_every_outcome():
    j = Journal()
    outcomes = [
        ("Splunk HEC event sent successfully for subkey={s}, model={m}. Response: {{\"text\":\"Success\",\"code\":0}}",
         "delivered"),
        ("Splunk HEC returned status 503 for subkey={s}, model={m}. URL: " + URL +
         ". Response: {{\"text\":\"Server is busy\",\"code\":9}}", "failed"),
        ("Splunk HEC request timed out after 5.0s for subkey={s}, model={m}. URL: " + URL + ". Error: timed out",
         "uncertain"),
        ("HTTP error sending event to Splunk HEC for subkey={s}, model={m}. URL: " + URL +
         ". Error: [Errno 111] Connection refused", "failed"),
    ]
    t = T0
    for i, (line, _) in enumerate(outcomes):
        model = ["gpt-5", "gpt-4o", "gpt-4.1", "o3-mini"][i]
        j.hec(t, "DEBUG", f"Forwarding usage event to Splunk HEC at {URL}: subkey={RAW}, model={model}, "
                          f"total_tokens={1706 + i}")
        j.block(t, "DEBUG", "Full HEC payload:", envelope(t + 0.0005, RAW, model, 797, 909 + i))
        j.log(t + 0.01, "INFO", "httpx", f'HTTP Request: POST {URL} "HTTP/1.1 200 OK"')
        j.hec(t + 0.02, "DEBUG" if i == 0 else "ERROR", line.format(s=RAW, m=model))
        t += 1.3
    # an error event: B7, B8, B9
    j.log(t, "WARNING", "oai_to_circuit", f"Quota exceeded (requests) for subkey={RAW} model=gpt-4o")
    j.hec(t, "DEBUG", f"Forwarding error event to Splunk HEC at {URL}: error_type=quota_exceeded, subkey={RAW}, "
                      "model=gpt-4o")
    j.block(t, "DEBUG", "Full HEC error payload:", error_envelope(t + 0.0004, RAW))
    j.hec(t + 0.02, "DEBUG", f"Splunk HEC error event sent successfully: error_type=quota_exceeded, subkey={RAW}."
                             ' Response: {"text":"Success","code":0}')
    recs, xs, rs = j.records()
    usage = [r for r in recs if r.kind == "usage"]
    assert [r.outcome for r in usage] == [o for _, o in outcomes]
    assert {r.era for r in recs} == {"B"}
    assert [r.event["model"] for r in usage] == ["gpt-5", "gpt-4o", "gpt-4.1", "o3-mini"]
    assert [r.event["total_tokens"] for r in usage] == [1706, 1707, 1708, 1709]
    assert all(r.full_json and r.time_source == "payload" for r in recs)
    assert usage[0].time == pytest.approx(T0 + 0.0005, abs=1e-6)
    assert usage[1].detail.startswith("http 503")
    err = [r for r in recs if r.kind == "error"]
    assert len(err) == 1 and err[0].outcome == "delivered" and err[0].event["error_type"] == "quota_exceeded"
    assert xs.ignored == {}


def test_era_c_debug_and_info():
    hashed = hash_subkey(RAW)
    j = Journal(jpid=10086, wpid=10090)
    t = T0
    # 292b3a9 at DEBUG: C1, C2, C3, C4 (403 with the payload on one line)
    env = envelope(t + 0.0003, hashed, "gpt-5", 0, 0)
    j.hec(t, "INFO", f"[HEC EXPORT] Starting Splunk HEC export - subkey={hashed}, model=gpt-5, tokens=0 "
                     f"(prompt=0, completion=0), url={URL}")
    j.block(t, "DEBUG", "[HEC EXPORT] Full HEC payload:", env)
    j.hec(t + 0.001, "DEBUG", f"[HEC EXPORT] Sending POST to {URL} with timeout=5.0s")
    j.hec(t + 0.04, "ERROR", f"[HEC EXPORT] ✗ FAILED - Non-200 status code 403 for subkey={hashed}, model=gpt-5. "
                             f'URL: {URL}. Response body: {{"text":"Invalid token","code":4}}. Request payload: '
                             + json.dumps(env))
    # C5: connection refused, joined to its Starting line (which alone has the tokens)
    t += 2
    j.hec(t, "INFO", f"[HEC EXPORT] Starting Splunk HEC export - subkey={hashed}, model=o3-mini, tokens=1010 "
                     f"(prompt=518, completion=492), url={URL}")
    j.hec(t + 0.002, "ERROR", f"[HEC EXPORT] ✗ CONNECTION FAILED - Cannot connect to Splunk HEC for "
                              f"subkey={hashed}, model=o3-mini. URL: {URL}. Error: [Errno 111] Connection refused")
    # C6, C8, C7: an error event refused with 403
    t += 2
    j.hec(t, "INFO", f"[HEC ERROR EXPORT] Starting Splunk HEC error export - error_type=quota_exceeded, "
                     f"subkey={hashed}, model=gpt-4o, url={URL}")
    j.block(t, "DEBUG", "[HEC ERROR EXPORT] Full HEC error payload:", error_envelope(t, hashed))
    j.hec(t + 0.02, "ERROR", f"[HEC ERROR EXPORT] ✗ FAILED - Status 403: error_type=quota_exceeded, "
                             f'subkey={hashed}, model=gpt-4o. URL: {URL}. Response: {{"text":"Invalid token","code":4}}')
    # 131c7f8.. at INFO: only Starting, and FAILED with its payload
    t += 2
    env2 = envelope(t + 0.0002, hashed, "gpt-4o", 1870, 355, index="oai_circuit")
    j.hec(t, "INFO", f"[HEC EXPORT] Starting Splunk HEC export - subkey={hashed}, model=gpt-4o, tokens=2225 "
                     f"(prompt=1870, completion=355), url={URL}")
    j.hec(t + 0.03, "ERROR", f"[HEC EXPORT] ✗ FAILED - Non-200 status code 403 for subkey={hashed}, model=gpt-4o. "
                             f'URL: {URL}. Response body: {{"text":"Invalid token","code":4}}. Request payload: '
                             + json.dumps(env2))
    recs, xs, rs = j.records()
    assert [(r.kind, r.era, r.outcome, r.full_json) for r in recs] == [
        ("usage", "C", "failed", True), ("usage", "C", "failed", False),
        ("error", "C", "failed", True), ("usage", "C", "failed", True)]
    refused = recs[1]
    assert refused.event["prompt_tokens"] == 518 and refused.event["total_tokens"] == 1010
    assert refused.detail == "connection failed"
    assert refused.time == pytest.approx(T0 + 2, abs=0.001) and refused.time_source == "asctime"
    assert recs[0].detail.startswith("http 403")
    assert recs[3].event["prompt_tokens"] == 1870 and recs[3].time == pytest.approx(T0 + 6.0002, abs=1e-6)
    assert xs.ignored == {}


def test_era_d_info_success_timeout_rebuilt_from_summary():
    hashed = hash_subkey(RAW2)
    j = Journal(jpid=7245, wpid=7249)
    t = T0
    j.hec(t, "INFO", f"[HEC EXPORT] Starting Splunk HEC export - subkey={hashed}, model=gpt-4o, tokens=2225 "
                     f"(prompt=1870, completion=355), source=10.20.30.205 (X-Forwarded-For: 203.0.113.211, "
                     f"10.20.30.205), url={URL}")
    j.hec(t + 5, "ERROR", f"[HEC EXPORT] ✗ TIMEOUT - Request timed out after 5.0s for subkey={hashed}, "
                          f"model=gpt-4o, tokens=2225. URL: {URL}. Error details: timed out. Payload size: 1335 bytes")
    recs, _, _ = j.records()
    (r,) = recs
    assert r.outcome == "uncertain" and r.era == "D" and not r.full_json
    assert r.event == {"subkey": hashed, "model": "gpt-4o", "requests": 1, "prompt_tokens": 1870,
                       "completion_tokens": 355, "total_tokens": 2225,
                       "timestamp": "2026-01-07T15:46:38.737000+00:00", "client_ip": "10.20.30.205",
                       "x_forwarded_for": "203.0.113.211, 10.20.30.205"}


def test_a_lost_outcome_line_does_not_move_the_next_same_key_outcome_onto_its_event():
    """Two sends with the same subkey and model; the first one's outcome line was lost (journald's rate
    limit): the second's ✓ SUCCESS, which repeats its token total, pairs with the second send."""
    hashed = hash_subkey(RAW2)
    j = Journal(jpid=7245, wpid=7249)
    for i, total in enumerate((1111, 2225)):
        j.hec(T0 + i, "INFO", f"[HEC EXPORT] Starting Splunk HEC export - subkey={hashed}, model=gpt-4o, "
                              f"tokens={total} (prompt={total - 100}, completion=100), source=10.20.30.205, url={URL}")
    j.hec(T0 + 1.2, "INFO", f"[HEC EXPORT] ✓ SUCCESS - Event sent successfully for subkey={hashed}, model=gpt-4o,"
                            ' tokens=2225, source=10.20.30.205. Response: {"text":"Success","code":0}')
    recs, _, _ = j.records()
    assert sorted((r.event["total_tokens"], r.outcome) for r in recs) == [(1111, "unknown"), (2225, "delivered")]


def test_two_workers_interleaved_are_joined_by_worker():
    """Outcome lines pair with the attempt of their own worker process, even when interleaved."""
    hashed = hash_subkey(RAW)
    j = Journal(jpid=7000, wpid=7001)
    start = ("[HEC EXPORT] Starting Splunk HEC export - subkey={s}, model={m}, tokens={t} (prompt={p}, "
             "completion=1), source=127.0.0.1, url=" + URL)
    j.hec(T0, "INFO", start.format(s=hashed, m="gpt-5", t=11, p=10), wpid=7001)
    j.hec(T0 + 0.001, "INFO", start.format(s=hashed, m="gpt-5", t=21, p=20), wpid=7002)
    j.hec(T0 + 0.01, "ERROR", f"[HEC EXPORT] ✗ CONNECTION FAILED - Cannot connect to Splunk HEC for subkey={hashed},"
                              f" model=gpt-5. URL: {URL}. Error: refused", wpid=7002)
    j.hec(T0 + 0.02, "INFO", f"[HEC EXPORT] ✓ SUCCESS - Event sent successfully for subkey={hashed}, model=gpt-5, "
                             "tokens=11, source=127.0.0.1. Response: ok", wpid=7001)
    recs, _, _ = j.records()
    got = {(r.worker_pid, r.event["total_tokens"], r.outcome) for r in recs}
    assert got == {(7002, 21, "failed"), (7001, 11, "delivered")}


def test_block_interrupted_by_an_access_log_line_still_parses():
    """uvicorn's access log (stdout) can land between the lines of a payload block (stderr)."""
    j = Journal()
    env = envelope(T0, RAW)
    text = json.dumps(env, indent=2).splitlines()
    j.hec(T0, "DEBUG", f"Forwarding usage event to Splunk HEC at {URL}: subkey={RAW}, model=gpt-5, total_tokens=1706")
    j.hec(T0, "DEBUG", "Full HEC payload: " + text[0])
    for i, line in enumerate(text[1:]):
        j.raw(j._prefix(T0) + line)
        if i == 3:
            j.raw(j._prefix(T0) + 'INFO:     127.0.0.1:47952 - "POST /v1/chat/completions HTTP/1.1" 200 OK')
    j.hec(T0 + 0.02, "DEBUG", f"Splunk HEC event sent successfully for subkey={RAW}, model=gpt-5. Response: ok")
    recs, xs, _ = j.records()
    assert len(recs) == 1 and recs[0].full_json and recs[0].outcome == "delivered"
    assert recs[0].event["prompt_tokens"] == 797


def test_era_a_outcomes_pair_in_order_and_identityless_error_failures_are_counted():
    j = Journal(jpid=9642, wpid=9646)
    ev = envelope(T0, RAW)["event"]
    j.hec(T0, "DEBUG", "Sending usage event to Splunk HEC: " + json.dumps(ev))
    j.hec(T0 + 0.04, "WARNING", 'Splunk HEC returned non-200 status: 503 - {"text":"Server is busy","code":9}')
    ev2 = dict(ev, model="gpt-4o", timestamp="2026-01-07T15:46:40.000000+00:00")
    j.hec(T0 + 1.3, "DEBUG", "Sending usage event to Splunk HEC: " + json.dumps(ev2))
    j.hec(T0 + 6.3, "WARNING", "Splunk HEC request timed out after 5.0s")
    j.hec(T0 + 7, "WARNING", 'Splunk HEC error event failed: 503 - {"text":"Server is busy","code":9}')
    recs, xs, _ = j.records()
    assert [(r.event["model"], r.outcome, r.era) for r in recs] == [("gpt-5", "failed", "A"),
                                                                      ("gpt-4o", "uncertain", "A")]
    assert recs[1].time == datetime(2026, 1, 7, 15, 46, 40, tzinfo=timezone.utc).timestamp()
    assert recs[1].time_source == "timestamp"
    assert xs.outcomes_without_attempt == 1
