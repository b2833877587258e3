"""SplunkHEC: deliver usage events to Splunk's HTTP Event Collector without losing or silently doubling them.

One ``requests.Session`` (keep-alive, cookies for sticky load balancers), batches of already
serialised bodies, retries only where a resend cannot make things worse, a 413 split, partial
acceptance on ``invalid-event-number``, failover across collectors and indexer acknowledgement.
Every item handed to ``deliver()`` comes back as exactly one ``Result`` -- or, on a fatal
configuration error, in ``HECFatalError.pending`` -- so the caller always knows what to dead-letter.
"""
from __future__ import annotations

import gzip as _gzip
import json
import random
import re
import socket
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

import requests

from . import __version__
from .timespec import iso_to_epoch, iso_utc  # noqa: F401  (iso_utc: part of this module's API)
from .errors import ConfigError, ToolkitError
from .events import hash_subkey

EVENT_PATH = "/services/collector/event"
HEALTH_PATH = "/services/collector/health"
ACK_PATH = "/services/collector/ack"
_URL_SUFFIXES = ("/services/collector/event/1.0", "/services/collector/event", "/services/collector")

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
FATAL_TOKEN_CODES = {1, 2, 3, 4, 21, 22}
BAD_EVENT_CODES = {5, 6, 12, 13, 15}


class HECError(ToolkitError):
    """Something about HEC went wrong."""


class HECFatalError(HECError):
    """Stop the run: a configuration problem (token, index, URL, TLS) that retrying cannot fix.

    ``pending`` holds every item consumed by ``deliver()`` but not yet given a Result, so the
    caller can dead-letter them together with the rest of its input.
    """

    exit_code = 2

    def __init__(self, message: str, pending: Optional[list] = None, setting: Optional[str] = None):
        super().__init__(message)
        self.pending: list = list(pending or [])
        self.setting = setting  # the one setting to blame, where one is ("index")


@dataclass
class Outgoing:
    """One event to send: ``body`` is a compact JSON HEC event object (utf-8, no trailing newline)."""

    id: str
    body: bytes


@dataclass
class Result:
    """The final fate of one Outgoing. ``maybe_doubled``: resent after a send whose outcome was unknown."""

    id: str
    body: bytes
    status: str  # "delivered" | "failed" | "dry_run"
    reason: Optional[str] = None
    maybe_doubled: bool = False


def collector_urls(url_setting: str) -> list[str]:
    """Event endpoint URLs from SPLUNK_HEC_URL: base, /services/collector[/event[/1.0]], comma-separated."""
    parts = [p.strip() for p in (url_setting or "").split(",") if p.strip()]
    if not parts:
        raise ConfigError("SPLUNK_HEC_URL is empty: give the collector's URL, e.g. https://splunk.example.com:8088")
    out: list[str] = []
    for raw in parts:
        u = urlsplit(raw)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ConfigError(f"SPLUNK_HEC_URL {raw!r} is not an http(s) URL like https://splunk.example.com:8088")
        if u.username or u.password:
            raise ConfigError("SPLUNK_HEC_URL must not carry credentials: put the token in SPLUNK_HEC_TOKEN")
        if u.query or u.fragment:
            raise ConfigError(f"SPLUNK_HEC_URL {u.scheme}://{u.netloc}{u.path} must not have a query or fragment")
        try:
            u.port
        except ValueError:
            raise ConfigError(f"SPLUNK_HEC_URL {raw!r} has an invalid port") from None
        path = u.path.rstrip("/")
        prefix = None
        if path == "":
            prefix = ""
        else:
            for suffix in _URL_SUFFIXES:
                if path.endswith(suffix):
                    prefix = path[: -len(suffix)]
                    break
        if prefix is None:
            raise ConfigError(
                f"SPLUNK_HEC_URL path {u.path!r} is not a HEC endpoint: use the base URL, "
                "/services/collector or /services/collector/event"
            )
        url = urlunsplit((u.scheme, u.netloc, prefix + EVENT_PATH, "", ""))
        if url not in out:
            out.append(url)
    return out


def _base(event_url: str) -> str:
    return event_url[: -len(EVENT_PATH)]


def to_epoch(timestamp) -> float:
    """Epoch seconds (float) from ISO text (Z, offset or naive=UTC), a datetime, or epoch seconds; None = now."""
    if timestamp is None:
        return time.time()
    if isinstance(timestamp, bool):
        raise ValueError(f"timestamp {timestamp!r} is not a time")
    if isinstance(timestamp, (int, float)):
        if timestamp > 1e11:
            raise ValueError(f"timestamp {timestamp!r} looks like milliseconds: give epoch seconds")
        return float(timestamp)
    if isinstance(timestamp, datetime):
        dt = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    try:
        return iso_to_epoch(timestamp)
    except ValueError:
        raise ValueError(f"timestamp {timestamp!r} is not ISO 8601 (e.g. 2026-01-15T00:00:00Z)") from None


def dumps(obj) -> bytes:
    """Compact JSON, utf-8: the bytes that go on the wire."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- internals ---------------------------------------------------------------------------------

@dataclass
class _Batch:
    """Items sent together; ``doubled`` once any send of them had an unknown outcome."""

    entries: list  # [(seq, Outgoing)]
    doubled: bool = False
    ack_id: Optional[int] = None
    ack_url: Optional[str] = None
    ack_sent_at: float = 0.0
    ack_resent: bool = False

    def raw_size(self) -> int:
        return sum(len(o.body) for _, o in self.entries) + max(0, len(self.entries) - 1)


@dataclass
class _Reply:
    status: int
    code: Optional[int]
    text: str
    data: dict = field(default_factory=dict)
    retry_after: Optional[float] = None


class _Bucket:
    """Token bucket on events/second: a batch of n waits until n tokens have accrued."""

    def __init__(self, rate: float, sleep, clock=time.monotonic):
        self.rate, self.sleep, self.clock = float(rate), sleep, clock
        self.next_free = clock()

    def take(self, n: int) -> None:
        now = self.clock()
        if self.next_free > now:
            self.sleep(self.next_free - now)
            now = self.next_free
        self.next_free = max(self.next_free, now - 1.0) + n / self.rate  # burst of at most 1s


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, IndexError):
            return None


def _chain(exc: BaseException):
    """Every exception wrapped inside a requests/urllib3 error (args, reason, cause, context)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        yield e
        todo.extend([getattr(e, "reason", None), e.__cause__, e.__context__])
        todo.extend(a for a in e.args if isinstance(a, BaseException))


def _names(exc) -> set:
    return {type(e).__name__ for e in _chain(exc)}


def _cert_problem(exc) -> Optional[str]:
    """The certificate verification message inside an SSLError, if that is what it is."""
    for e in _chain(exc):
        if type(e).__name__ == "SSLCertVerificationError":
            return getattr(e, "verify_message", None) or "certificate verify failed"
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        m = re.search(r"certificate verify failed: ([^(')\]]+)", text)
        return m.group(1).strip() if m else "certificate verify failed"
    return None


NOT_TLS = "the collector does not speak TLS on that port"


def _tls_reason(text: str) -> str:
    """OpenSSL's own words from requests' nested SSLError text, and what they usually mean."""
    m = re.search(r"\[SSL: ([A-Z_0-9]+)\] ([^(')\]]+)", text)
    if not m:
        return (text.splitlines() or ["handshake failed"])[0][:200]
    code, words = m.group(1), m.group(2).strip()
    if code in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return f"{words}: {NOT_TLS} (HEC with SSL off wants http://)"
    return words


def _describe(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """(one-line reason, whether the body may have reached HEC) for a requests exception."""
    names = _names(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout) or "ConnectTimeoutError" in names:
        return f"connect timed out after {timeout:g}s", False
    if isinstance(exc, requests.exceptions.ReadTimeout) or "ReadTimeoutError" in names:
        return f"no reply within {timeout:g}s (timeout after sending)", True
    if "NameResolutionError" in names or "gaierror" in names:
        return "host name does not resolve", False
    if "ConnectionRefusedError" in names:
        return "connection refused", False
    if "NewConnectionError" in names:
        return "cannot connect", False
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error: " + _tls_reason(str(exc)), False
    if "RemoteDisconnected" in names or "ConnectionResetError" in names or "BrokenPipeError" in names:
        return "connection closed without a reply", True
    return f"{type(exc).__name__}: " + (str(exc).splitlines() or [""])[0][:200], True


class SplunkHEC:
    """A client for one HEC collector (or several, for failover); use as a context manager."""

    def __init__(self, url=None, token=None, *, index="oai_circuit", sourcetype="llm:usage", source="oai-to-circuit",
                 host=None, verify=True, timeout=10.0, max_batch_bytes=900_000, max_batch_events=500, gzip=True,
                 retry_for=300.0, ack=None, ack_timeout=120.0, max_eps=None, dry_run=False, verbose=False,
                 log: Optional[Callable[[str], None]] = None, session: Optional[requests.Session] = None,
                 sleep=time.sleep, backoff_base=0.5, backoff_cap=30.0, ack_poll_interval=0.5, ack_poll_max=5.0,
                 max_in_flight=8, stop: Optional[threading.Event] = None):
        if not url or not token:  # e.g. url=os.getenv("SPLUNK_HEC_URL") unset: credentials.env, as the scripts read it
            from .config import load_settings

            settings = load_settings()
            settings.hec_url, settings.hec_token = url or settings.hec_url, token or settings.hec_token
            settings.require_hec()  # one line naming what is missing and where it was looked for
            url, token = settings.hec_url, settings.hec_token
        self.urls = collector_urls(url)
        if not token:
            raise ConfigError("SPLUNK_HEC_TOKEN is empty: set the HEC token")
        self._token = str(token).strip()
        if not self._token.isascii() or not self._token.isprintable():
            raise ConfigError("SPLUNK_HEC_TOKEN contains a character that is not printable ASCII "
                              "(pasted from a document?); HEC tokens are GUIDs like 1234abcd-...")
        if isinstance(verify, (str, Path)) and not isinstance(verify, bool):
            if not Path(verify).exists():
                raise ConfigError(f"CA bundle {str(verify)!r} (SPLUNK_VERIFY_SSL) does not exist")
            verify = str(verify)
        self.verify = verify
        self.index, self.sourcetype, self.source = index, sourcetype, source
        self.host = host or socket.gethostname()
        self.timeout = float(timeout)
        self.max_batch_bytes = int(max_batch_bytes)
        self.max_batch_events = int(max_batch_events)
        if max_eps:
            self.max_batch_events = max(1, min(self.max_batch_events, int(max_eps)))
        self.gzip = gzip
        self.retry_for = float(retry_for)
        self.ack = ack
        self.ack_timeout = float(ack_timeout)
        self.max_eps = max_eps
        self.dry_run = dry_run
        self.verbose = verbose
        self._log_fn = log
        self._sleep = sleep
        # a stop request (SIGTERM, Ctrl-C) ends retry and rate-limit waits at once; the POST on the wire finishes
        self.stop = stop
        self._wait = stop.wait if stop is not None and sleep is time.sleep else sleep
        self.backoff_base, self.backoff_cap = float(backoff_base), float(backoff_cap)
        self.ack_poll_interval, self.ack_poll_max = float(ack_poll_interval), float(ack_poll_max)
        self.max_in_flight = max(1, int(max_in_flight))
        self.channel = str(uuid.uuid4())
        self._ack_on = ack is True
        self._active = 0  # index in self.urls of the collector in use
        self._batch_bytes = self.max_batch_bytes  # lowered after a 413
        self._bucket = _Bucket(max_eps, self._wait) if max_eps else None
        self._random = random.Random()
        self._last_retry_note = float("-inf")
        self._posting = None   # the batch whose POST is on the wire
        self._retrying = None  # the batch being sent (with its retries)
        self._inflight: list = []  # batches accepted, awaiting their ack
        self._owns_session = session is None
        self.session = session or requests.Session()
        self._headers = {
            "Authorization": f"Splunk {self._token}",
            "Content-Type": "application/json",
            "User-Agent": f"oai-to-circuit-backfill/{__version__}",
        }
        if any(u.startswith("http://") for u in self.urls):
            self._log("warning: SPLUNK_HEC_URL is plain http: the token and the events travel unencrypted")
        elif verify is False:
            self._log("TLS certificate verification is OFF (verify=False): the collector's identity is not checked")

    def __repr__(self):
        return (f"SplunkHEC(urls={self.urls!r}, index={self.index!r}, ack={self.ack!r}, "
                f"gzip={self.gzip!r}, dry_run={self.dry_run!r})")

    # -- plumbing ----------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _log(self, line: str) -> None:
        line = self._scrub(line)
        if self._log_fn is not None:
            self._log_fn(line)
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def _fatal(self, message: str, setting: Optional[str] = None) -> HECFatalError:
        return HECFatalError(self._scrub(message), setting=setting)

    def _request_headers(self, extra=None) -> dict:
        h = dict(self._headers)
        if self._ack_on:
            h["X-Splunk-Request-Channel"] = self.channel
        if extra:
            h.update(extra)
        return h

    def _http(self, method: str, url: str, **kw) -> requests.Response:
        with warnings.catch_warnings():
            if self.verify is False:  # warned once at construction, not once per request
                warnings.simplefilter("ignore")
            return self.session.request(method, url, verify=self.verify, timeout=self.timeout, **kw)

    def _parse(self, resp: requests.Response) -> _Reply:
        """HEC's JSON reply, or a one-line summary of a non-JSON body (an LB's HTML page)."""
        data: dict = {}
        try:
            parsed = resp.json()
            if isinstance(parsed, dict):
                data = parsed
        except ValueError:
            pass
        code = data.get("code") if isinstance(data.get("code"), int) else None
        text = data.get("text")
        if not isinstance(text, str):
            ctype = resp.headers.get("Content-Type", "").split(";")[0] or "no content type"
            text = f"{resp.reason or 'HTTP ' + str(resp.status_code)} (non-JSON {ctype} body)"
        return _Reply(resp.status_code, code, text, data, _retry_after(resp.headers.get("Retry-After")))

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- health and check ------------------------------------------------------------------
    def _health_one(self, event_url: str) -> dict:
        url = _base(event_url) + HEALTH_PATH
        try:
            resp = self._http("GET", url, headers=self._request_headers())
        except requests.RequestException as exc:
            cert = _cert_problem(exc)
            text = f"TLS certificate verification failed: {cert}" if cert else _describe(exc, self.timeout)[0]
            return {"url": url, "ok": False, "status": None, "text": text}
        reply = self._parse(resp)
        return {"url": url, "ok": resp.status_code == 200, "status": resp.status_code, "text": reply.text}

    def health(self) -> dict:
        """Health of the collectors: the first healthy one's entry (else the first), plus ``collectors``."""
        every = [self._health_one(u) for u in self.urls]
        best = next((h for h in every if h["ok"]), every[0])
        return dict(best, collectors=every)

    def check(self) -> list[str]:
        """Problems found, one line each: health, then the token, then the index; [] when all is well.

        The token is probed with an empty body (HEC answers code 5 "No data" to a good token) and
        the index with ``{"index": X, "event": ""}``, which HEC refuses either way: nothing is indexed.
        """
        problems = []
        headers = dict(self._request_headers(), **{"X-Splunk-Request-Channel": self.channel})
        for event_url in self.urls:
            h = self._health_one(event_url)
            if h["status"] is None:
                problems.append(f"{_base(event_url)}: cannot reach HEC: {h['text']}")
                continue
            if not h["ok"]:
                problems.append(f"{_base(event_url)}: HEC health check failed: {h['text']} (HTTP {h['status']})")
            probes = (("token", b""), ("index", dumps({"index": self.index, "event": ""})))
            for what, body in probes:
                try:
                    r = self._parse(self._http("POST", event_url, data=body, headers=headers))
                except requests.RequestException as exc:
                    problems.append(f"{event_url}: {what} check failed: {_describe(exc, self.timeout)[0]}")
                    break
                if r.status in (401, 403) or r.code in FATAL_TOKEN_CODES:
                    problems.append(f"{event_url}: HEC token rejected: {r.text} (HTTP {r.status}, code {r.code}); "
                                    "check SPLUNK_HEC_TOKEN")
                    break
                if r.code == 7:
                    problems.append(f"{event_url}: index {self.index!r} is not accepted for this token "
                                    "(code 7 Incorrect index): check SPLUNK_INDEX (or --index) and the token's allowed indexes")
                    break
                if r.status == 404:
                    problems.append(f"{event_url}: not a HEC endpoint (HTTP 404): check SPLUNK_HEC_URL")
                    break
                expected = {5, 10} if what == "token" else {12, 13, 10}
                if r.code not in expected and r.status >= 400:
                    problems.append(f"{event_url}: unexpected HEC reply to the {what} check: {r.text} "
                                    f"(HTTP {r.status}, code {r.code})")
                    break
        return [self._scrub(p) for p in problems]

    # -- single event, as the service sends it ---------------------------------------------
    def usage_event(self, subkey, model, requests=1, prompt_tokens=0, completion_tokens=0, total_tokens=0,
                    timestamp=None, backfill=False, **extra) -> dict:
        """The HEC event object for one usage record: what the live service sends, plus ``time``."""
        epoch = to_epoch(timestamp)
        event = {
            "subkey": hash_subkey(subkey),
            "model": model,
            "requests": requests,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total_tokens,
            "timestamp": iso_utc(epoch),
        }
        if backfill:
            event["backfill"] = True
        event.update(extra)
        return {"time": round(epoch, 6), "host": self.host, "source": self.source,
                "sourcetype": self.sourcetype, "index": self.index, "event": event}

    def send_usage_event(self, subkey, model, requests=1, prompt_tokens=0, completion_tokens=0, total_tokens=0,
                         timestamp=None, backfill=False, **extra) -> bool:
        """Send one usage event now; True when HEC accepted (or acknowledged) it."""
        body = dumps(self.usage_event(subkey, model, requests, prompt_tokens, completion_tokens, total_tokens,
                                      timestamp, backfill, **extra))
        if self.dry_run:
            sys.stdout.write(body.decode("utf-8") + "\n")
            sys.stdout.flush()
            return True
        for result in self.deliver([Outgoing(uuid.uuid4().hex, body)]):
            if result.status != "delivered":
                self._log(f"usage event not delivered: {result.reason}")
            return result.status == "delivered"
        return False

    # -- streaming delivery ----------------------------------------------------------------
    def deliver(self, items: Iterable[Outgoing]) -> Iterator[Result]:
        """Send every item; yield one Result per item once its fate is final (any order).

        Raises HECFatalError (with ``.pending``) when HEC refuses the configuration.
        """
        outstanding: dict = {}  # seq -> Outgoing: consumed, no Result yet
        inflight: list = []  # batches accepted, awaiting their ack
        self._inflight = inflight
        state = {"last_poll": time.monotonic(), "interval": self.ack_poll_interval}

        def finish(results):
            for r_seq, res in results:
                outstanding.pop(r_seq, None)
                yield res

        try:
            for entries in self._pack(items, outstanding):
                if self.dry_run:
                    for seq, o in entries:
                        sys.stdout.write(o.body.decode("utf-8") + "\n")
                    sys.stdout.flush()
                    yield from finish((s, Result(o.id, o.body, "dry_run", "dry run: not sent")) for s, o in entries)
                    continue
                if self._bucket is not None:
                    self._bucket.take(len(entries))
                yield from finish(self._send(_Batch(entries), inflight))
                if inflight:
                    block = len(inflight) >= self.max_in_flight
                    yield from finish(self._poll_acks(inflight, state, until=self.max_in_flight - 1 if block else None))
            while inflight:
                yield from finish(self._poll_acks(inflight, state, until=0))
        except HECFatalError as exc:
            exc.pending = list(outstanding.values())
            raise

    def _pack(self, items, outstanding) -> Iterator[list]:
        """Lazily group items into batches bounded by events and (uncompressed) bytes."""
        batch, size = [], 0
        for seq, item in enumerate(items):
            outstanding[seq] = item
            add = len(item.body) + (1 if batch else 0)
            if batch and size + add > self._batch_bytes:
                yield batch
                batch, size, add = [], 0, len(item.body)
            batch.append((seq, item))
            size += add
            if len(batch) >= self.max_batch_events:  # full: send now, read no further ahead
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def _results(self, batch: _Batch, status: str, reason=None, entries=None):
        reason = self._scrub(reason) if reason else reason  # reasons go to dead-letter files and stderr
        return [(seq, Result(o.id, o.body, status, reason, batch.doubled))
                for seq, o in (batch.entries if entries is None else entries)]

    def _send(self, batch: _Batch, inflight: list) -> Iterator:
        """Send one batch to its end (splits, partial acceptance); accepted ack batches go to inflight.

        A generator, so results already final are handed out even if a later part raises.
        """
        work = [batch]
        while work:
            b = work.pop()
            outcome, reply, url = self._post_with_retries(b)
            if outcome == "ok":
                ack_id = reply.data.get("ackId") if reply else None
                if self._ack_on and isinstance(ack_id, int):
                    b.ack_id, b.ack_url, b.ack_sent_at = ack_id, url, time.monotonic()
                    inflight.append(b)
                else:
                    if self._ack_on and self.ack is True:
                        self._log("HEC returned no ackId: indexer acknowledgement is disabled for this token; "
                                  "continuing without acks")
                        self._ack_on = False
                    yield from self._results(b, "delivered")
            elif outcome == "exhausted":
                yield from self._results(b, "failed", reply)
            elif outcome == "too_large":
                n = len(b.entries)
                if n == 1:
                    sent = len(self._body(b)[1])
                    yield from self._results(b, "failed", f"event too large for HEC max_content_length: {sent} bytes")
                    continue
                half = n // 2
                new_limit = max(16_384, b.raw_size() // 2)
                if new_limit < self._batch_bytes:
                    self._batch_bytes = new_limit
                    self._log(f"HEC answered 413 (body too large): batches now at most {new_limit} bytes")
                work.append(_Batch(b.entries[half:], b.doubled))
                work.append(_Batch(b.entries[:half], b.doubled))
            elif outcome == "rejected":
                n = len(b.entries)
                bad = reply.data.get("invalid-event-number")
                reason = f"{reply.text} (HTTP {reply.status}, code {reply.code})"
                if isinstance(bad, int) and not isinstance(bad, bool) and n > 0:
                    bad = min(max(bad, 0), n - 1)
                    yield from self._results(b, "delivered", entries=b.entries[:bad])
                    yield from self._results(b, "failed", reason, entries=b.entries[bad:bad + 1])
                    if bad + 1 < n:
                        work.append(_Batch(b.entries[bad + 1:], b.doubled))
                elif n == 1:
                    yield from self._results(b, "failed", reason)
                else:  # no position given: halve until the bad event stands alone
                    work.append(_Batch(b.entries[n // 2:], b.doubled))
                    work.append(_Batch(b.entries[: n // 2], b.doubled))

    def _body(self, b: _Batch) -> tuple[bytes, bytes]:
        raw = b"\n".join(o.body for _, o in b.entries)
        return raw, (_gzip.compress(raw, compresslevel=5) if self.gzip else raw)

    def _backoff(self, attempt: int) -> float:
        return self._random.uniform(0, min(self.backoff_cap, self.backoff_base * (2 ** attempt)))

    def _post_with_retries(self, b: _Batch):
        """POST one batch until it is accepted, rejected or out of retry time.

        Returns (outcome, reply-or-reason, collector url): ok | too_large | rejected | exhausted.
        """
        raw, body = self._body(b)
        self._retrying = b  # left set if a stop interrupts: its earlier attempts may have arrived
        result = self._post_until_final(b, raw, body)
        self._retrying = None
        return result

    def unconfirmed_may_have_arrived(self) -> set:
        """Ids HEC may hold although no Result said so (for a caller stopped mid-delivery).

        A POST cut off while on the wire, a batch whose earlier attempt was ambiguous (a timeout
        after the body went out), and batches accepted but not yet acknowledged. A batch that was
        only ever refused, or never reached HEC (connection refused), is not among them.
        """
        ids = set()
        if self._posting is not None:
            ids.update(o.id for _, o in self._posting.entries)
        if self._retrying is not None and self._retrying.doubled:
            ids.update(o.id for _, o in self._retrying.entries)
        for b in self._inflight:
            ids.update(o.id for _, o in b.entries)
        return ids

    def _post_until_final(self, b: _Batch, raw: bytes, body: bytes):
        deadline = time.monotonic() + self.retry_for
        attempt, tried_this_round, last_reason, wait_hint = 0, 0, "not sent", None
        while True:
            url = self.urls[self._active]
            headers = self._request_headers({"Content-Encoding": "gzip"} if self.gzip else None)
            start = time.monotonic()
            try:
                self._posting = b  # a stop right now leaves it set: the body may be on its way
                resp = self._http("POST", url, data=body, headers=headers)
                self._posting = None
            except requests.RequestException as exc:
                self._posting = None
                cert = _cert_problem(exc)
                if cert:
                    raise self._fatal(f"TLS certificate verification failed for {_base(url)}: {cert}; "
                                      "set SPLUNK_VERIFY_SSL to the CA bundle path") from None
                reason, maybe_sent = _describe(exc, self.timeout)
                if NOT_TLS in reason:  # a setting, not an outage: retrying would only wait --retry-for
                    raise self._fatal(f"{_base(url)}: {reason}; check SPLUNK_HEC_URL") from None
                if maybe_sent:
                    b.doubled = True
                if self.verbose:
                    self._log(f"POST {url} events={len(b.entries)} bytes={len(raw)}"
                              f"{f' gzip={len(body)}' if self.gzip else ''} -> {reason} "
                              f"{time.monotonic() - start:.3f}s")
                last_reason, wait_hint = f"{reason} ({_base(url)})", None
            else:
                reply = self._parse(resp)
                if self.verbose:
                    self._log(f"POST {url} events={len(b.entries)} bytes={len(raw)}"
                              f"{f' gzip={len(body)}' if self.gzip else ''} -> HTTP {reply.status} "
                              f"code={reply.code} {time.monotonic() - start:.3f}s")
                if 200 <= reply.status < 300:
                    return "ok", reply, url
                self._raise_if_fatal(reply, url, b)
                if reply.code == 10 and not self._ack_on:  # this token wants acks: resend with our channel
                    self._ack_on = True
                    self._log(f"HEC requires indexer acknowledgement (code 10): acks enabled on channel {self.channel}")
                    continue
                if reply.status == 413:
                    return "too_large", reply, url
                if reply.status not in RETRYABLE_STATUS and reply.status < 500:
                    return "rejected", reply, url
                last_reason = f"{reply.text} (HTTP {reply.status}, code {reply.code}, {_base(url)})"
                wait_hint = reply.retry_after
            # retryable: move to the next collector; back off once every collector failed this round
            tried_this_round += 1
            if len(self.urls) > 1:
                self._active = (self._active + 1) % len(self.urls)
                if self.verbose:
                    self._log(f"failing over to {_base(self.urls[self._active])}")
            if tried_this_round < len(self.urls) and wait_hint is None:
                continue
            tried_this_round = 0
            delay = wait_hint if wait_hint is not None else self._backoff(attempt)
            attempt += 1
            if time.monotonic() + delay > deadline:
                waited = self.retry_for - max(0.0, deadline - time.monotonic())
                return "exhausted", (f"gave up after {attempt} attempts in {waited:.1f}s (--retry-for "
                                     f"{self.retry_for:g}s would pass before the next): {last_reason}"), url
            now = time.monotonic()
            if self.verbose or now - self._last_retry_note >= 10.0:
                self._last_retry_note = now
                left = max(0.0, deadline - now)
                self._log(f"HEC not accepting yet: {last_reason}; retrying in {delay:.1f}s "
                          f"(gives up in {left:.0f}s, --retry-for)")
            self._wait(delay)
            if self.stop is not None and self.stop.is_set():
                return "exhausted", f"not sent: the run was stopped while HEC was not accepting: {last_reason}", url

    def _raise_if_fatal(self, reply: _Reply, url: str, b: _Batch) -> None:
        base = _base(url)
        if reply.status in (401, 403) or reply.code in FATAL_TOKEN_CODES:
            what = {1: "the token is disabled", 22: "the token is disabled", 2: "no token was sent",
                    3: "the Authorization header was not accepted", 4: "the token is not valid",
                    21: "the token is not valid"}.get(reply.code, "the token was refused")
            raise self._fatal(f"HEC at {base} refused the request: {what}: {reply.text} "
                              f"(HTTP {reply.status}, code {reply.code}); check SPLUNK_HEC_TOKEN")
        if reply.code == 7:
            n = reply.data.get("invalid-event-number")
            k = min(max(n, 0), len(b.entries) - 1) if isinstance(n, int) else 0
            try:
                index = json.loads(b.entries[k][1].body).get("index") or self.index
            except (ValueError, AttributeError):
                index = self.index
            raise self._fatal(f"HEC at {base} refused index {index!r} (code 7 Incorrect index): the index does not "
                              "exist or this token may not write to it; check SPLUNK_INDEX (or --index)", "index")
        if reply.code == 10 and self.ack is False:
            raise self._fatal(f"HEC at {base} requires indexer acknowledgement for this token (code 10) "
                              "but acks are turned off")
        if reply.code == 10 and self._ack_on:
            raise self._fatal(f"HEC at {base} says the data channel is missing (code 10) although it was sent")
        if reply.code == 11:
            raise self._fatal(f"HEC at {base} refused the ack channel (code 11 Invalid data channel)")
        if reply.status == 404:
            raise self._fatal(f"{url} is not a HEC endpoint (HTTP 404): check SPLUNK_HEC_URL")

    # -- indexer acknowledgement -------------------------------------------------------------
    def _poll_acks(self, inflight: list, state: dict, until: Optional[int]) -> Iterator:
        """Query acks for in-flight batches; with ``until`` set, keep polling until at most that many remain."""
        while inflight:
            now = time.monotonic()
            due = state["last_poll"] + state["interval"]
            if now < due:
                if until is None or len(inflight) <= until:
                    return
                self._sleep(due - now)
            state["last_poll"] = time.monotonic()
            progressed = False
            by_url: dict = {}
            for b in inflight:
                by_url.setdefault(b.ack_url, []).append(b)
            for url, batches in by_url.items():
                acked = self._query_acks(url, [b.ack_id for b in batches])
                if acked is None:  # acks turned out to be disabled: a 200 is all we get
                    for b in batches:
                        inflight.remove(b)
                        yield from self._results(b, "delivered")
                    progressed = True
                    continue
                for b in batches:
                    if acked.get(str(b.ack_id)) is True:
                        inflight.remove(b)
                        progressed = True
                        yield from self._results(b, "delivered")
            now = time.monotonic()
            for b in [b for b in inflight if now - b.ack_sent_at >= self.ack_timeout]:
                inflight.remove(b)
                progressed = True
                if b.ack_resent:
                    yield from self._results(b, "failed", f"not acknowledged within {self.ack_timeout:g}s")
                    continue
                self._log(f"ackId {b.ack_id} not acknowledged within {self.ack_timeout:g}s: resending "
                          f"{len(b.entries)} events once (they may be doubled)")
                b.doubled, b.ack_resent = True, True
                yield from self._resend_for_ack(b, inflight)
            if progressed:
                state["interval"] = self.ack_poll_interval
            else:
                state["interval"] = min(self.ack_poll_max, state["interval"] * 2)
            if until is None or len(inflight) <= until:
                return

    def _resend_for_ack(self, b: _Batch, inflight: list) -> Iterator:
        before = len(inflight)
        yield from self._send(_Batch(b.entries, doubled=True, ack_resent=True), inflight)
        for new in inflight[before:]:  # parts split off on the way are resent ones too
            new.ack_resent = True

    def _query_acks(self, event_url: str, ids: list) -> Optional[dict]:
        """{"id": bool} for the ids; None when HEC says acks are disabled (code 14)."""
        url = _base(event_url) + ACK_PATH
        start = time.monotonic()
        try:
            resp = self._http("POST", url, data=dumps({"acks": ids}), headers=self._request_headers())
        except requests.RequestException as exc:
            self._log(f"ack query to {_base(event_url)} failed: {_describe(exc, self.timeout)[0]}")
            return {}
        reply = self._parse(resp)
        if self.verbose:
            self._log(f"POST {url} acks={len(ids)} -> HTTP {reply.status} code={reply.code} "
                      f"{time.monotonic() - start:.3f}s")
        if reply.code == 14:
            self._log("HEC says ACK is disabled for this token (code 14): continuing without acks")
            self._ack_on = False
            return None
        if reply.status in (401, 403) or reply.code in FATAL_TOKEN_CODES:
            raise self._fatal(f"HEC at {_base(event_url)} refused the ack query: {reply.text} "
                              f"(HTTP {reply.status}, code {reply.code}); check SPLUNK_HEC_TOKEN")
        acks = reply.data.get("acks")
        return {str(k): v for k, v in acks.items()} if isinstance(acks, dict) else {}
