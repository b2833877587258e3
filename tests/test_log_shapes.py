"""Every usage-related line shape of LOG_SHAPES.md, by shape id: A1-A5, B1-B9, C1-C8, D1-D12 give
exactly their records; U1-U9 and X1-X7 give none and are counted as read.

The journals are tests/fixtures/log_shapes/*.short.txt, one per era, made of the doc's real example
lines in the order the service writes them (Starting, payload block, Sending POST, httpx line,
outcome), with the rest of each attempt taken from the same real run where it exists and rebuilt
from the shape description where it does not (README.md there says which line is which). The
records are checked through the library the CLI uses (journal.read_entries + usage_log.extract),
and once through backfill_hec.main in-process.

test_usage_log.py already covers eras B and C built line by line, two interleaved workers, an
access-log line inside an era B block, and era A pairing with synthetic events; this file adds
the doc's own lines for every shape, the shapes that file does not reach (A2, A5, D2-D5, D7-D12,
U*, X*), and the pitfalls those lines allow.
"""
from __future__ import annotations

import calendar
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Optional
from zoneinfo import ZoneInfo

import pytest

import backfill_hec
from oai_to_circuit.events import encode, to_hec
from oai_to_circuit.journal import ReadStats, read_entries
from oai_to_circuit.usage_log import UsageExtractor, extract

FIX = Path(__file__).parent / "fixtures" / "log_shapes"
FILES = ("era_a", "era_b", "era_c", "era_d_info", "era_d_debug")
NY = ZoneInfo("America/New_York")

# the raw subkeys of the runs (tests/fixtures/fixture-*.json); the service logs them raw in eras A
# and B and as sha256:<16 hex> from C on
RAW = {
    "alpha": "team_alpha_iK2ZWeqhFWCEPyYngFb51yBMWXaSCrUZ",
    "bravo": "team_bravo_9382dffx1kVZQ2tqMnMcLRkBOzZU3G8x",
    "charlie": "svc_charlie_pLIix6MEOLeMa61EqJomTEI1JEzO3joO",
    "delta": "user_delta_ptgUzEjfebzJ6sZWdoHIxrXl0gqn87b1",
    "echo": "user_echo_NqVwYS81VP7Hb1DX8pPd5khxE3pyIgKp",
    "foxtrot": "user_foxtrot_YK0fFWqcajQLE9WVxuXbrFZmU3A6IIRg",
    "zulu": "zz_unknown_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oO",
}


def sha(raw: str) -> str:
    """The subkey as HEC must get it: 'sha256:' + the first 16 hex of SHA-256 of the raw key."""
    return "sha256:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]


def asctime_epoch(text: str) -> float:
    """'2026-12-03 18:23:31,278' (the service ran in UTC) as epoch seconds."""
    d, ms = text.split(",")
    return calendar.timegm(datetime.strptime(d, "%Y-%m-%d %H:%M:%S").timetuple()) + int(ms) / 1000


def iso_epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class Want:
    """One record: what the service tried to send, and what backfill must make of it."""
    kind: str
    era: str
    outcome: str
    who: str                      # key of RAW
    model: str
    tokens: Optional[tuple]       # (prompt, completion, total); None for error events
    time: tuple                   # (time_source, value as the log has it)
    worker: int                   # SpawnProcess-1[ pid], not the journal's ident[pid]
    full_json: bool
    detail: str                   # how the record's detail starts
    error_type: Optional[str] = None
    client_ip: Optional[str] = None
    xff: Optional[str] = None

    def epoch(self) -> float:
        src, v = self.time
        return {"payload": float, "timestamp": iso_epoch, "asctime": asctime_epoch}[src](v)


def U(outcome, era, who, model, tokens, time, worker, full, detail, ip=None, xff=None):
    return Want("usage", era, outcome, who, model, tokens, time, worker, full, detail, None, ip, xff)


def E(outcome, era, who, model, error_type, time, worker, full, detail, ip=None, xff=None):
    return Want("error", era, outcome, who, model, None, time, worker, full, detail, error_type, ip, xff)


OK, R503, R403, REFUSED, TIMEOUT = "HEC accepted it", "http 503", "http 403", "connection failed", "timeout"

WANT = {
    # 9c7664e: the event JSON only, no time: the time is the event's ISO timestamp; outcomes by order.
    # Worker [ 9646] (4 digits, so a leading space); the journal pid is 9642.
    "era_a": [
        U("delivered", "A", "delta", "gpt-5", (0, 0, 0), ("timestamp", "2026-12-03T18:26:06.830274+00:00"), 9646,
          True, OK),  # a stream before 2f14fef: 0 tokens
        U("failed", "A", "bravo", "gpt-4o", (359, 487, 846), ("timestamp", "2026-12-03T18:26:07.930878+00:00"),
          9646, True, R503),
        U("uncertain", "A", "echo", "gpt-4o-mini", (0, 0, 0), ("timestamp", "2026-12-03T18:26:10.834210+00:00"),
          9646, True, TIMEOUT),
        U("failed", "A", "charlie", "o3-mini", (1324, 759, 2083), ("timestamp", "2026-12-03T18:26:26.633779+00:00"),
          9646, True, REFUSED),  # an access-log line falls between its A1 and A5
        # request #72's quota_exceeded error event went to HEC with no splunk_hec line at all: no record
    ],
    # 9820dfe: the multi-line envelope on every attempt (DEBUG hard-wired), raw subkeys
    "era_b": [
        U("delivered", "B", "delta", "gpt-5", (0, 0, 0), ("payload", 1796322398.7376022), 9868, True, OK),
        U("failed", "B", "bravo", "gpt-4o", (359, 487, 846), ("payload", 1796322399.7904031), 9868, True, R503),
        U("uncertain", "B", "echo", "gpt-4o-mini", (0, 0, 0), ("payload", 1796322402.4551234), 9868, True, TIMEOUT),
        E("delivered", "B", "delta", "gpt-4o", "quota_exceeded", ("payload", 1796322412.8240623), 9868, True, OK),
        U("failed", "B", "charlie", "o3-mini", (1324, 759, 2083), ("payload", 1796322415.9213457), 9868, True,
          REFUSED),
    ],
    # 292b3a9: hashed subkeys, the truncated token (403 on every send); worker [10090] has 5 digits
    "era_c": [
        U("failed", "C", "delta", "gpt-5", (0, 0, 0), ("payload", 1796322427.2606294), 10090, True, R403),
        E("failed", "C", "delta", "gpt-4o", "quota_exceeded", ("payload", 1796322436.8385863), 10090, True, R403),
        U("failed", "C", "charlie", "o3-mini", (113, 1276, 1389), ("payload", 1796322440.8504417), 10090, True,
          REFUSED),
    ],
    # e749b02 at LOG_LEVEL=INFO: only the one-line payload of a non-200 FAILED; everything else is
    # rebuilt from the summary lines, timed by the asctime of the attempt's Starting line
    "era_d_info": [
        U("delivered", "D", "delta", "gpt-5", (1341, 510, 1851), ("asctime", "2026-12-03 18:23:31,278"), 7249, False,
          OK, "127.0.0.1", ""),
        E("delivered", "D", "zulu", "gpt-4o-mini", "unauthorized_subkey", ("asctime", "2026-12-03 18:23:31,880"),
          7249, False, OK, "198.51.100.43", "198.51.100.43"),
        U("failed", "D", "alpha", "gpt-4o", (1870, 355, 2225), ("payload", 1796322212.328193), 7249, True, R503,
          "10.20.30.205", "203.0.113.211, 10.20.30.205"),  # client_ip: the last X-Forwarded-For hop
        U("delivered", "D", "echo", "gpt-4o-mini", (1004, 435, 1439), ("asctime", "2026-12-03 18:23:33,484"), 7249,
          False, OK, "10.20.30.28", "203.0.113.89, 10.20.30.28"),  # the same, read off the Starting line
        U("failed", "D", "echo", "gpt-4o-mini", (1301, 202, 1503), ("payload", 1796322214.9191167), 7249, True, R503,
          "127.0.0.1", ""),
        U("uncertain", "D", "alpha", "gpt-5", (1181, 395, 1576), ("asctime", "2026-12-03 18:23:35,145"), 7249, False,
          TIMEOUT, "127.0.0.1", ""),
        E("failed", "D", "foxtrot", "gpt-4o", "unauthorized_subkey", ("asctime", "2026-12-03 18:23:44,029"), 7249,
          False, R503, "127.0.0.1", ""),
        E("delivered", "D", "delta", "gpt-4o", "quota_exceeded", ("asctime", "2026-12-03 18:23:45,355"), 7249, False,
          OK, "127.0.0.1", ""),
        U("failed", "D", "charlie", "o3-mini", (113, 1276, 1389), ("asctime", "2026-12-03 18:23:49,191"), 7249, False,
          REFUSED, "127.0.0.1", ""),  # D7 has no tokens: they come from its Starting line
    ],
    # e749b02 at LOG_LEVEL=DEBUG: the multi-line envelope on every attempt
    "era_d_debug": [
        U("delivered", "D", "delta", "gpt-4o-mini", (478, 6, 484), ("payload", 1796322238.78801), 7728, True, OK,
          "127.0.0.1", ""),  # its block has the access-log line in the middle, and nests circuit_rate_limits
        E("delivered", "D", "delta", "gpt-4o", "quota_exceeded", ("payload", 1796322238.8775616), 7728, True, OK,
          "127.0.0.1", ""),
        E("failed", "D", "zulu", "gpt-4o", "unauthorized_subkey", ("payload", 1796322256.298272), 7728, True, REFUSED,
          "198.51.100.187", "198.51.100.187"),
    ],
}

# shape id -> (fixture, a pattern of its line as the doc describes it, the records it takes part in)
SHAPES = {
    "A1": ("era_a", r"splunk_hec - Sending usage event to Splunk HEC: \{", [0, 1, 2, 3]),
    "A2": ("era_a", r"splunk_hec - Splunk HEC event sent successfully: \{", [0]),
    "A3": ("era_a", r"splunk_hec - Splunk HEC returned non-200 status: \d{3} - ", [1]),
    "A4": ("era_a", r"splunk_hec - Splunk HEC request timed out after [\d.]+s$", [2]),
    "A5": ("era_a", r"splunk_hec - Failed to send event to Splunk HEC: ", [3]),
    "B1": ("era_b", r"splunk_hec - Forwarding usage event to Splunk HEC at \S+: subkey=\w+, model=[^,]+, "
                    r"total_tokens=\d+$", [0, 1, 2, 4]),
    "B2": ("era_b", r"splunk_hec - Full HEC payload: \{$", [0, 1, 2, 4]),
    "B3": ("era_b", r"splunk_hec - Splunk HEC event sent successfully for subkey=\w+, model=\S+\. Response: ", [0]),
    "B4": ("era_b", r"splunk_hec - Splunk HEC returned status \d{3} for subkey=\w+, model=\S+\. URL: ", [1]),
    "B5": ("era_b", r"splunk_hec - Splunk HEC request timed out after [\d.]+s for subkey=\w+, model=\S+\. URL: ", [2]),
    "B6": ("era_b", r"splunk_hec - HTTP error sending event to Splunk HEC for subkey=\w+, model=\S+\. URL: ", [4]),
    "B7": ("era_b", r"splunk_hec - Forwarding error event to Splunk HEC at \S+: error_type=\w+, subkey=\w+, "
                    r"model=\S+$", [3]),
    "B8": ("era_b", r"splunk_hec - Full HEC error payload: \{$", [3]),
    "B9": ("era_b", r"splunk_hec - Splunk HEC error event sent successfully: error_type=\w+, subkey=\w+\. "
                    r"Response: ", [3]),
    "C1": ("era_c", r"\[HEC EXPORT\] Starting Splunk HEC export - subkey=sha256:[0-9a-f]{16}, model=[^,]+, "
                    r"tokens=\d+ \(prompt=\d+, completion=\d+\), url=\S+$", [0, 2]),
    "C2": ("era_c", r"\[HEC EXPORT\] Full HEC payload: \{$", [0, 2]),
    "C3": ("era_c", r"\[HEC EXPORT\] Sending POST to \S+ with timeout=[\d.]+s$", [0, 2]),
    "C4": ("era_c", r"\[HEC EXPORT\] ✗ FAILED - Non-200 status code \d{3} for subkey=sha256:[0-9a-f]{16}, "
                    r"model=\S+\. URL: .*\. Response body: .*\. Request payload: \{.*\}$", [0]),
    "C5": ("era_c", r"\[HEC EXPORT\] ✗ CONNECTION FAILED - Cannot connect to Splunk HEC for "
                    r"subkey=sha256:[0-9a-f]{16}, model=\S+\. URL: .*\. Error: ", [2]),
    "C6": ("era_c", r"\[HEC ERROR EXPORT\] Starting Splunk HEC error export - error_type=\w+, "
                    r"subkey=sha256:[0-9a-f]{16}, model=[^,]+, url=\S+$", [1]),
    "C7": ("era_c", r"\[HEC ERROR EXPORT\] ✗ FAILED - Status \d{3}: error_type=\w+, subkey=sha256:[0-9a-f]{16}, "
                    r"model=\S+\. URL: ", [1]),
    "C8": ("era_c", r"\[HEC ERROR EXPORT\] Full HEC error payload: \{$", [1]),
    "D1": ("era_d_info", r"\[HEC EXPORT\] Starting Splunk HEC export - subkey=sha256:[0-9a-f]{16}, model=[^,]+, "
                         r"tokens=\d+ \(prompt=\d+, completion=\d+\), source=.*, url=\S+$", [0, 2, 3, 4, 5, 8]),
    "D2": ("era_d_debug", r"\[HEC EXPORT\] Full HEC payload: \{$", [0]),
    "D3": ("era_d_debug", r"\[HEC EXPORT\] Sending POST to \S+ with timeout=[\d.]+s, verify_ssl=\w+, "
                          r"token=.{10}\.\.\.$", [0]),
    "D4": ("era_d_info", r"\[HEC EXPORT\] ✓ SUCCESS - Event sent successfully for subkey=sha256:[0-9a-f]{16}, "
                         r"model=[^,]+, tokens=\d+, source=.*\. Response: ", [0, 3]),
    "D5": ("era_d_info", r"\[HEC EXPORT\] ✗ FAILED - Non-200 status code \d{3} for subkey=sha256:[0-9a-f]{16}, "
                         r"model=\S+\. URL: .*\. Response body: .*\. Request payload: \{.*\}$", [2, 4]),
    "D6": ("era_d_info", r"\[HEC EXPORT\] ✗ TIMEOUT - Request timed out after [\d.]+s for "
                         r"subkey=sha256:[0-9a-f]{16}, model=[^,]+, tokens=\d+\. URL: .*Payload size: \d+ bytes$", [5]),
    "D7": ("era_d_info", r"\[HEC EXPORT\] ✗ CONNECTION FAILED - Cannot connect to Splunk HEC for "
                         r"subkey=sha256:[0-9a-f]{16}, model=\S+\. URL: .*\. Error: ", [8]),
    "D8": ("era_d_info", r"\[HEC ERROR EXPORT\] Starting Splunk HEC error export - error_type=\w+, "
                         r"subkey=sha256:[0-9a-f]{16}, model=[^,]+, source=.*, url=\S+$", [1, 6, 7]),
    "D9": ("era_d_debug", r"\[HEC ERROR EXPORT\] Full HEC error payload: \{$", [1, 2]),
    "D10": ("era_d_info", r"\[HEC ERROR EXPORT\] ✓ SUCCESS - Error event sent successfully: error_type=\w+, "
                          r"subkey=sha256:[0-9a-f]{16}, source=.*\. Response: ", [1, 7]),
    "D11": ("era_d_info", r"\[HEC ERROR EXPORT\] ✗ FAILED - Status \d{3}: error_type=\w+, "
                          r"subkey=sha256:[0-9a-f]{16}, model=\S+\. URL: .*\. Response: ", [6]),
    "D12": ("era_d_debug", r"\[HEC ERROR EXPORT\] ✗ CONNECTION FAILED - Cannot connect to Splunk HEC: "
                           r"error_type=\w+, subkey=sha256:[0-9a-f]{16}\. URL: .*\. Error: ", [2]),
}

# shapes that are no HEC event: every line of the shape in the fixture named (the doc's example among
# them; U9 whole, where the doc cut it)
NOISE = {
    "U1": ("era_d_info", r"- oai_to_circuit - \[SSE PARSER\] Final usage extracted from stream: \{'prompt_tokens': "),
    "U2": ("era_d_debug", r"- oai_to_circuit - \[SSE PARSER\] Extracted usage from stream: \{'prompt_tokens': "),
    "U3": ("era_d_info", r"- oai_to_circuit - \[STREAMING\] Recording usage: prompt=\d+, completion=\d+, total=\d+$"),
    "U4": ("era_d_info", r"- oai_to_circuit - \[STREAMING\] No usage data collected from stream$"),
    "U5": ("era_d_debug", r"- oai_to_circuit - \[TOKEN EXTRACTION\] Successfully extracted tokens: prompt=\d+, "),
    "U6": ("era_d_debug", r"- oai_to_circuit - \[TOKEN EXTRACTION\] No usage dict found in response payload$"),
    "U7": ("era_d_debug", r"- oai_to_circuit - \[COST\] Estimated cost for (non-)?streaming request: \$"),
    "U8": ("era_d_info", r"- oai_to_circuit - \[CIRCUIT RATE LIMITS\] \{'x-ratelimit-remaining-requests': "),
    "U9": ("era_d_debug", r"- oai_to_circuit - \[NON-STREAMING RESPONSE\] Full JSON response: \{.*\"usage\""),
    "X1": ("era_d_info", r"- httpx    - HTTP Request: POST http://127\.0\.0\.1:18088/services/collector/event "
                         r"\"HTTP/1\.1 \d{3} "),
    "X2": ("era_d_info", r"- oai_to_circuit - Quota exceeded \(requests\) for subkey=\w+ model=\S+$"),
    "X3": ("era_d_info", r"- oai_to_circuit - Unauthorized subkey attempted access: \S{20}\.\.\.$"),
    "X4": ("era_d_info", r"- oai_to_circuit - (Received request from |Processing request for model: "
                         r"|Circuit API response: )"),
    "X5": ("era_d_info", r"\]: INFO:     [\d.]+:\d+ - \"POST /v1/chat/completions HTTP/1\.1\" \d{3} "),
    "X6": ("era_d_info", r"- oai_to_circuit\.splunk_hec - Splunk HEC enabled: \S+"),
    "X7": ("era_d_info", r" systemd\[1\]: "),
}


# -- reading ---------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def text_of(name: str) -> str:
    return (FIX / f"{name}.short.txt").read_text(encoding="utf-8")


def lines_of(name: str) -> list:
    return text_of(name).splitlines()


def run(text: str, zone=timezone.utc):
    """(records, ReadStats, ExtractStats) of one journal text, read as the CLI reads its input."""
    ex = UsageExtractor(zone)
    rs = ReadStats()

    class Stdin:
        buffer = io.BytesIO(text.encode("utf-8"))

    recs = list(extract(read_entries(["-"], zone=zone, stats=rs, keep=ex.keep, stdin=Stdin), ex))
    return recs, rs, ex.stats


@lru_cache(maxsize=None)
def records(name: str):
    return run(text_of(name))


def shape_lines(name: str, pattern: str) -> list:
    rx = re.compile(pattern)
    return [line for line in lines_of(name) if rx.search(line)]


# -- what a record must be -------------------------------------------------------------------------
def seen(r) -> dict:
    body = to_hec(r, index="oai_circuit", sourcetype="llm:usage", source="oai-to-circuit")
    ev = r.event
    return {
        "kind": r.kind, "era": r.era, "outcome": r.outcome, "logged_subkey": ev.get("subkey"),
        "hec_subkey": body["event"]["subkey"], "model": ev.get("model"),
        "tokens": (ev.get("prompt_tokens"), ev.get("completion_tokens"), ev.get("total_tokens"))
        if r.kind == "usage" else None,
        "error_type": ev.get("error_type"), "time_source": r.time_source, "full_json": r.full_json,
        "worker": r.worker_pid, "client_ip": ev.get("client_ip"), "xff": ev.get("x_forwarded_for"),
    }


def wanted(w: Want) -> dict:
    raw = RAW[w.who]
    return {
        "kind": w.kind, "era": w.era, "outcome": w.outcome,
        "logged_subkey": raw if w.era in "AB" else sha(raw),  # as the service logged it
        "hec_subkey": sha(raw), "model": w.model, "tokens": w.tokens, "error_type": w.error_type,
        "time_source": w.time[0], "full_json": w.full_json, "worker": w.worker, "client_ip": w.client_ip,
        "xff": w.xff,
    }


def assert_record(r, w: Want) -> None:
    assert seen(r) == wanted(w)
    assert r.time == pytest.approx(w.epoch(), abs=1e-6)
    body = to_hec(r, index="oai_circuit", sourcetype="llm:usage", source="oai-to-circuit")
    assert body["time"] == r.time  # the original time, not when the backfill ran
    assert body["sourcetype"] == ("llm:usage:error" if w.kind == "error" else "llm:usage")
    assert r.detail.startswith(w.detail), r.detail
    if not r.full_json:  # rebuilt from the summary: its timestamp is the attempt's asctime
        assert r.event["timestamp"] == datetime.fromtimestamp(w.epoch(), timezone.utc).isoformat(
            timespec="microseconds")


# -- one test per shape ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(SHAPES))
def test_usage_shape_gives_exactly_its_records(shape):
    name, pattern, idx = SHAPES[shape]
    assert shape_lines(name, pattern), f"{shape}: no such line in {name}.short.txt"
    recs, _, xs = records(name)
    assert len(recs) == len(WANT[name])
    for i in idx:
        assert_record(recs[i], WANT[name][i])
    assert xs.ignored == {} and xs.outcomes_without_attempt == 0


@pytest.mark.parametrize("shape", list(NOISE))
def test_context_shape_gives_no_record_and_is_counted_as_read(shape):
    name, pattern = NOISE[shape]
    lines = shape_lines(name, pattern)
    assert lines, f"{shape}: no such line in {name}.short.txt"
    recs, rs, xs = run("\n".join(lines) + "\n")
    assert recs == []
    assert rs.lines == len(lines) and rs.skipped_total == 0 and rs.parsed <= len(lines)
    assert xs.ignored == {} and xs.outcomes_without_attempt == 0
    if shape == "U3":
        assert xs.streams_recorded == len(lines)
    if shape == "U4":  # the service exported nothing for these streams: counted, nothing to backfill
        assert xs.streams_without_usage == len(lines)


@pytest.mark.parametrize("name", FILES)
def test_each_era_journal_gives_one_record_per_attempt_in_order(name):
    recs, rs, xs = records(name)
    assert len(recs) == len(WANT[name])
    for r, w in zip(recs, WANT[name]):
        assert_record(r, w)
    assert rs.lines == len(lines_of(name))
    assert xs.ignored == {} and xs.outcomes_without_attempt == 0 and xs.clock_mismatch == 0
    every = {i for _, _, idx in (v for v in SHAPES.values() if v[0] == name) for i in idx}
    assert every == set(range(len(recs)))  # no record the shapes above do not account for


@pytest.mark.parametrize("name", FILES)
def test_context_lines_between_the_attempts_change_nothing(name):
    """The U and X lines of a journal (httpx 503 lines, access-log lines inside a block, raw subkeys in
    Quota exceeded / Unauthorized lines, the upstream usage of [NON-STREAMING RESPONSE]) are noise."""
    noise = [re.compile(p) for _, p in NOISE.values()]
    kept = [line for line in lines_of(name) if not any(rx.search(line) for rx in noise)]
    assert len(kept) < len(lines_of(name))
    recs, _, _ = run("\n".join(kept) + "\n")
    assert [seen(r) for r in recs] == [seen(r) for r in records(name)[0]]
    assert [r.time for r in recs] == [r.time for r in records(name)[0]]


# -- pitfalls --------------------------------------------------------------------------------------
def test_worker_pids_of_four_and_five_digits():
    """SpawnProcess-1[%5d]: '[ 7249]' and '[10090]'; the record has the worker's pid, not the journal's."""
    assert shape_lines("era_d_info", r"oai-to-circuit\[7245\]: .* SpawnProcess-1\[ 7249\] - ")
    assert shape_lines("era_c", r"oai-to-circuit\[10086\]: .* SpawnProcess-1\[10090\] - ")
    assert {r.worker_pid for r in records("era_d_info")[0]} == {7249}
    assert {r.worker_pid for r in records("era_c")[0]} == {10090}


def test_connection_failed_takes_its_tokens_and_time_from_the_starting_line():
    (d7,) = shape_lines("era_d_info", SHAPES["D7"][1])
    assert "tokens=" not in d7
    r = records("era_d_info")[0][8]
    assert r.event == {"subkey": sha(RAW["charlie"]), "model": "o3-mini", "requests": 1, "prompt_tokens": 113,
                       "completion_tokens": 1276, "total_tokens": 1389, "timestamp": "2026-12-03T18:23:49.191000+00:00",
                       "client_ip": "127.0.0.1", "x_forwarded_for": ""}


def test_era_a_outcomes_carry_no_identity_and_pair_by_order():
    for shape in ("A2", "A3", "A4", "A5"):
        (line,) = shape_lines("era_a", SHAPES[shape][1])
        assert "subkey" not in line and "model" not in line
    # A5 came after an access-log line of another request (uvicorn's stdout)
    lines = lines_of("era_a")
    i = lines.index(shape_lines("era_a", SHAPES["A5"][1])[0])
    assert re.search(NOISE["X5"][1], lines[i - 1]) and re.search(SHAPES["A1"][1], lines[i - 2])
    assert [(r.event["model"], r.outcome) for r in records("era_a")[0]] == [
        ("gpt-5", "delivered"), ("gpt-4o", "failed"), ("gpt-4o-mini", "uncertain"), ("o3-mini", "failed")]


def test_era_a_one_lost_outcome_line_leaves_only_its_own_event_without_an_outcome():
    """LOG_SHAPES pitfall 5: in 9c7664e the next splunk_hec line after 'Sending usage event' was always
    its outcome. When an outcome line is missing (journald's rate limit drops lines, and this version
    logs every request body at DEBUG), that event has no outcome; the others keep theirs."""
    text = "\n".join(line for line in lines_of("era_a") if not re.search(SHAPES["A2"][1], line)) + "\n"
    recs, _, _ = run(text)
    got = sorted((r.line_no, r.event["model"], r.outcome) for r in recs)
    assert [(m, o) for _, m, o in got] == [("gpt-5", "unknown"), ("gpt-4o", "failed"),
                                           ("gpt-4o-mini", "uncertain"), ("o3-mini", "failed")]


def test_an_access_log_line_inside_a_real_payload_block():
    lines = lines_of("era_d_debug")
    start = lines.index(shape_lines("era_d_debug", SHAPES["D2"][1])[0])
    end = lines.index("Dec 03 18:23:58 proxy-01 oai-to-circuit[7724]: }", start)
    inside = [line for line in lines[start:end] if re.search(NOISE["X5"][1], line)]
    assert len(inside) == 1
    prefix = "Dec 03 18:23:58 proxy-01 oai-to-circuit[7724]: "
    block = ["{"] + [line[len(prefix):] for line in lines[start + 1:end + 1] if line not in inside]
    envelope = json.loads("\n".join(block))  # the block as logged, read without the interruption
    r = records("era_d_debug")[0][0]
    assert r.full_json and r.time_source == "payload"
    assert r.event == envelope["event"] and r.time == envelope["time"]  # every field, the nested one too
    assert r.event["circuit_rate_limits"] == {"x-ratelimit-remaining-requests": "1987",
                                              "x-ratelimit-remaining-tokens": "1984516"}


def test_logged_json_is_read_back_as_sent_floats_and_non_ascii():
    """Logged JSON: ensure_ascii ("\\u00c9quipe") and Python float repr (8.283e-05); HEC gets UTF-8."""
    d2 = records("era_d_debug")[0][0]
    assert d2.event["estimated_payg_cost_usd"] == 8.283e-05
    assert b'"estimated_payg_cost_usd":8.283e-05' in encode(to_hec(d2, index="i", sourcetype="s", source="o"))
    (echo_d5,) = [line for line in shape_lines("era_d_info", SHAPES["D5"][1]) if "\\u00c9quipe" in line]
    assert "Équipe" not in echo_d5
    r = records("era_d_info")[0][4]
    assert r.event["friendly_name"] == "Équipe Écho"
    assert '"friendly_name":"Équipe Écho"'.encode() in encode(to_hec(r, index="i", sourcetype="s", source="o"))


def test_era_a_error_events_leave_no_line_to_backfill():
    """9c7664e sends quota_exceeded error events without any splunk_hec line: only X2 and an httpx line."""
    lines = lines_of("era_a")
    (x2,) = [i for i, line in enumerate(lines) if re.search(NOISE["X2"][1], line)]
    assert re.search(NOISE["X1"][1], lines[x2 + 1])
    assert all(r.kind == "usage" for r in records("era_a")[0])


# -- the same journals in other journalctl views ---------------------------------------------------
PREFIX_RE = re.compile(r"^(?P<when>[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d) (?P<host>\S+) (?P<ident>[^\s\[:]+)"
                       r"(?:\[(?P<pid>\d+)\])?: (?P<msg>.*)$")
LEVEL_RE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR)(:\s+)(?=\d{4}-\d\d-\d\d )")
COLOUR = {"DEBUG": 36, "INFO": 32, "WARNING": 33, "ERROR": 31}


def coloured(msg: str) -> str:
    """The stderr line as journald stored it: uvicorn's coloured level prefix (the access log has none)."""
    return LEVEL_RE.sub(lambda m: f"\x1b[{COLOUR[m.group(1)]}m{m.group(1)}\x1b[0m{m.group(2)}", msg, count=1)


def in_view(text: str, view: str) -> str:
    """The -o short text as another journalctl view prints the same entries (the year is 2026)."""
    out = []
    for line in text.splitlines():
        m = PREFIX_RE.match(line)
        if m is None:  # -- Boot ... --
            if view != "json":
                out.append(line)
            continue
        t = datetime.strptime("2026 " + m["when"], "%Y %b %d %H:%M:%S").replace(tzinfo=timezone.utc)
        tail = f" {m['host']} {m['ident']}" + (f"[{m['pid']}]" if m["pid"] else "") + ": "
        msg = m["msg"]
        if view == "short-iso":  # pitfall 1/7: the offset without a colon
            out.append(t.strftime("%Y-%m-%dT%H:%M:%S+0000") + tail + msg)
        elif view == "short-iso TZ=America/New_York":
            out.append(t.astimezone(NY).strftime("%Y-%m-%dT%H:%M:%S%z") + tail + msg)
        elif view == "short TZ=America/New_York":  # 5 h earlier
            out.append(t.astimezone(NY).strftime("%b %d %H:%M:%S") + tail + msg)
        elif view == "short -a":  # ANSI kept
            out.append(t.strftime("%b %d %H:%M:%S") + tail + coloured(msg))
        elif view == "cat":
            out.append(coloured(msg))
        elif view == "json":  # MESSAGE a byte array where the line has ESC, a string otherwise
            msg = coloured(msg)
            d = {"__REALTIME_TIMESTAMP": str(int(t.timestamp()) * 1_000_000), "_HOSTNAME": m["host"],
                 "SYSLOG_IDENTIFIER": m["ident"], "MESSAGE": list(msg.encode()) if "\x1b" in msg else msg}
            if m["pid"]:
                d["_PID"] = m["pid"]
            out.append(json.dumps(d, ensure_ascii=False, separators=(",", ":")))
        else:
            raise AssertionError(view)
    return "\n".join(out) + "\n"


VIEWS = {  # view -> the zone the operator says it was printed in (--tz)
    "short-iso": timezone.utc, "short-iso TZ=America/New_York": NY, "short TZ=America/New_York": NY,
    "short -a": timezone.utc, "cat": timezone.utc, "json": timezone.utc,
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("name", FILES)
def test_every_view_gives_the_same_records(name, view):
    recs, rs, xs = run(in_view(text_of(name), view), VIEWS[view])
    want = records(name)[0]
    assert [seen(r) for r in recs] == [seen(r) for r in want]
    assert [r.time for r in recs] == [r.time for r in want]
    assert [r.anchor for r in recs] == [r.anchor for r in want]
    assert {r.host for r in recs} == ({None} if view == "cat" else {"proxy-01"})
    assert xs.ignored == {} and xs.clock_mismatch == 0


def test_a_view_printed_in_new_york_read_as_utc_is_put_right_by_the_logged_times():
    """Pitfall 7: the INFO-era times come from the asctime, read against the journal's own time; a
    payload time of the same journal shows the 5 h, and the summary-line records are moved by it."""
    recs, _, xs = run(in_view(text_of("era_d_info"), "short TZ=America/New_York"), timezone.utc)
    assert [r.time for r in recs] == pytest.approx([w.epoch() for w in WANT["era_d_info"]], abs=1e-6)
    assert xs.clock_skew == 5 * 3600 and xs.clock_corrected == 7 and xs.clock_unchecked == 0


def test_all_eras_mixed_in_one_extract_and_as_several_inputs(tmp_path):
    order = ("era_d_info", "era_d_debug", "era_a", "era_b", "era_c")  # the runs' own time order
    want = [w for name in order for w in WANT[name]]
    recs, rs, _ = run("".join(text_of(n) for n in order))
    assert len(recs) == len(want)
    for r, w in zip(recs, want):
        assert_record(r, w)
    ex = UsageExtractor(timezone.utc)
    recs = list(extract(read_entries([str(FIX / f"{n}.short.txt") for n in order], zone=timezone.utc,
                                     keep=ex.keep), ex))
    assert [seen(r) for r in recs] == [wanted(w) for w in want]


# -- through the command line ----------------------------------------------------------------------
def test_dry_run_ndjson_sends_one_hashed_event_per_attempt_with_its_original_time(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for var in ("SPLUNK_INDEX", "SPLUNK_SOURCETYPE", "SPLUNK_HEC_URL", "SPLUNK_HEC_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    paths = [str(FIX / f"{n}.short.txt") for n in FILES]
    code = backfill_hec.main([*paths, "--dry-run", "--output", "ndjson", "--utc", "--no-names", "--include-errors"])
    out, err = capsys.readouterr()
    assert code == 0, err
    bodies = [json.loads(line) for line in out.splitlines()]
    want = [w for name in FILES for w in WANT[name]]
    assert len(bodies) == len(want) == 24
    for body, w in zip(bodies, want):
        ev = body["event"]
        assert ev["subkey"] == sha(RAW[w.who]) and ev["model"] == w.model
        assert body["time"] == pytest.approx(w.epoch(), abs=1e-6)
        assert ev["backfill_live_send"] == w.outcome and ev["backfill"] is True
        if w.kind == "usage":
            assert (ev["prompt_tokens"], ev["completion_tokens"], ev["total_tokens"]) == w.tokens
            assert body["sourcetype"] == "llm:usage"
        else:
            assert ev["error_type"] == w.error_type and body["sourcetype"] == "llm:usage:error"
    assert len({b["event"]["backfill_id"] for b in bodies}) == 24
    # every line read is accounted for: usage-related + not usage-related + the one -- Boot -- marker
    total = sum(len(lines_of(n)) for n in FILES)
    assert f"read:      {total} lines from 5 input(s)" in err
    m = re.search(r"lines:     (\d+) usage-related \(read for events\); skipped: (\d+) not usage-related; "
                  r"1 journalctl marker lines", err)
    assert m and int(m.group(1)) + int(m.group(2)) + 1 == total, err
    assert "ignored:" not in err and "found:     24 events" in err
    assert "1 streamed responses carried no usage" in err  # U4
