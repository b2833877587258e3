"""A real Splunk HEC speaker on 127.0.0.1, for tests and benchmarks.

It answers the way HEC does (codes, texts, acks, gzip, concatenated JSON bodies) and records
what arrives, so tests can assert exactly which events Splunk would have indexed. A body is stored
whole when accepted; on a 400 carrying ``invalid-event-number`` N (codes 6, 12, 13, 15) the events
before N are stored, as Splunk indexes them; code 7 stores nothing. Faults are
injected on demand and consumed, in order, by the next POSTs to the event endpoint.

``sticky_cookie="AWSALB"`` puts it behind a cookie-sticky load balancer (like AWS ELB/ALB): a
request without the cookie (or with an unknown one) lands on an indexer none of the earlier
requests reached, and the reply sets the cookie for that indexer. Ack ids live on the indexer
that took the data, so an ack query that lost the cookie is answered false, as Splunk would.

Run alone for benchmarks:  python tests/hec_server.py --port 0 [--token T]
It prints ``READY http://127.0.0.1:PORT`` and serves until SIGTERM/SIGINT, then prints a summary.
"""
from __future__ import annotations

import argparse
import gzip
import http.cookies
import json
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DEFAULT_TOKEN = "11111111-2222-4333-8444-555555555555"

EVENT_PATHS = {"/services/collector/event", "/services/collector", "/services/collector/event/1.0"}
HEALTH_PATHS = {"/services/collector/health", "/services/collector/health/1.0"}
ACK_PATH = "/services/collector/ack"

_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


class _Reply(Exception):
    """Raised inside request handling to answer with one HEC JSON reply."""

    def __init__(self, status, code, text, **extra):
        super().__init__(text)
        self.status, self.code, self.text, self.extra = status, code, text, extra

    def payload(self):
        body = {"text": self.text, "code": self.code}
        body.update(self.extra)
        return body


def parse_body(raw: bytes):
    """Split a HEC body into objects the way HEC does; raise _Reply on the first bad one.

    Returns the list of parsed objects. ``_Reply.parsed`` carries the objects before the bad one.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reply(400, 6, "Invalid data format", **{"invalid-event-number": 0})
    objs = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in _WS:
            pos += 1
        if pos >= end:
            break
        try:
            obj, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            err = _Reply(400, 6, "Invalid data format", **{"invalid-event-number": len(objs)})
            err.parsed = objs  # like Splunk: the events before the bad one are indexed
            raise err
        objs.append(obj)
    if not objs:
        raise _Reply(400, 5, "No data")
    return objs


def _flat_value(v):
    if isinstance(v, bool) or v is None:
        return False
    if isinstance(v, (str, int, float)):
        return True
    if isinstance(v, list):
        return all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v)
    return False


def validate_events(objs, indexes):
    """Check each object (codes 7, 12, 13, 15); raise _Reply at the first bad one.

    The index is checked first, so a probe ``{"index": X, "event": ""}`` tells a wrong index (7)
    from a good one (13) without indexing anything: that is what ``SplunkHEC.check()`` sends.
    """
    for i, obj in enumerate(objs):
        n = {"invalid-event-number": i}
        if indexes is not None and "index" in obj and obj["index"] not in indexes:
            raise _Reply(400, 7, "Incorrect index", **n)
        if "event" not in obj:
            raise _Reply(400, 12, "Event field is required", **n)
        ev = obj["event"]
        if ev is None or (isinstance(ev, str) and not ev.strip()) or ev == {} or ev == []:
            raise _Reply(400, 13, "Event field cannot be blank", **n)
        if "fields" in obj:
            f = obj["fields"]
            if not isinstance(f, dict) or not all(_flat_value(v) for v in f.values()):
                raise _Reply(400, 15, "Error in handling indexed fields", **n)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HECServer/1.0"
    sys_version = ""
    timeout = 60  # idle keep-alive connections end eventually
    _indexer, _set_cookie = "", None  # set per request by _route()

    # -- plumbing -------------------------------------------------------------------------
    def setup(self):
        hec = self.server.hec
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle stalls
        if hec._tls_context is not None:
            self.request.settimeout(10)
            self.request = hec._tls_context.wrap_socket(self.request, server_side=True)
        super().setup()
        hec._track(self.request, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.hec._track(self.request, False)

    def log_message(self, format, *args):  # quiet: tests read .requests instead
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, payload, content_type="application/json", extra_headers=None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra_headers or {}).items():
                self.send_header(k, v)
            if self._set_cookie:
                self.send_header("Set-Cookie", self._set_cookie)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client gave up (timeout): nothing to tell it
            self.close_connection = True

    def _route(self):
        """The indexer the load balancer picks for this request ("" without ``sticky_cookie``)."""
        hec = self.server.hec
        self._set_cookie = None
        if not hec.sticky_cookie:
            return ""
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            pass
        morsel = jar.get(hec.sticky_cookie)
        with hec._lock:
            if morsel is not None and morsel.value in hec._indexers:
                return morsel.value
            indexer = uuid.uuid4().hex
            hec._indexers.add(indexer)
        self._set_cookie = f"{hec.sticky_cookie}={indexer}; Path=/"
        return indexer

    def _channel(self, query):
        ch = self.headers.get("X-Splunk-Request-Channel")
        if not ch:
            ch = (query.get("channel") or [None])[0]
        return ch

    def _check_auth(self):
        hec = self.server.hec
        auth = self.headers.get("Authorization")
        if not auth:
            raise _Reply(401, 2, "Token is required")
        scheme, _, token = auth.partition(" ")
        if scheme != "Splunk" or not token.strip():
            raise _Reply(401, 3, "Invalid authorization")
        if token.strip() != hec.token:
            raise _Reply(403, 4, "Invalid token")

    def _check_channel(self, channel):
        if not channel:
            raise _Reply(400, 10, "Data channel is missing")
        try:
            uuid.UUID(channel)
        except ValueError:
            raise _Reply(400, 11, "Invalid data channel")

    def _record(self, path, raw, gz, n_events, status, channel, fault=None):
        headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        rec = {"path": path, "method": self.command, "gzip": gz, "bytes": len(raw), "events": n_events,
               "status": status, "channel": channel, "headers": headers, "indexer": self._indexer}
        if fault:
            rec["fault"] = fault
        with self.server.hec._lock:
            self.server.hec.requests.append(rec)

    # -- verbs ----------------------------------------------------------------------------
    def do_GET(self):
        hec = self.server.hec
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        channel = self._channel(parse_qs(parts.query))
        self._indexer = self._route()
        if path in HEALTH_PATHS:
            if hec._healthy:
                status, payload = 200, {"text": "HEC is healthy", "code": 17}
            else:
                status, payload = 503, {"text": "HEC is unhealthy, queues are full", "code": 18}
        else:
            status, payload = 404, {"text": "The requested URL was not found on this server.", "code": 404}
        self._record(path, b"", False, 0, status, channel)
        self._send(status, payload)

    def do_POST(self):
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query)
        channel = self._channel(query)
        self._indexer = self._route()
        raw = self._read_body()
        gz = self.headers.get("Content-Encoding", "").lower() == "gzip"
        if path in EVENT_PATHS:
            self._post_event(path, raw, gz, channel)
        elif path == ACK_PATH:
            self._post_ack(path, raw, gz, channel)
        else:
            self._record(path, raw, gz, 0, 404, channel)
            self._send(404, {"text": "The requested URL was not found on this server.", "code": 404})

    def _decode(self, raw, gz):
        if not gz:
            return raw
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise _Reply(400, 6, "Invalid data format", **{"invalid-event-number": 0})

    def _count(self, raw, gz):
        """Events in a body that is not going to be processed (a fault): for the record only."""
        try:
            return len(parse_body(self._decode(raw, gz)))
        except _Reply as r:
            return len(getattr(r, "parsed", ()))

    def _post_event(self, path, raw, gz, channel):
        hec = self.server.hec
        fault = hec._next_fault()
        kind = fault["kind"] if fault else None

        if kind == "fail":
            self._record(path, raw, gz, self._count(raw, gz), fault["status"], channel, "fail")
            headers = {}
            if fault["retry_after"] is not None:
                headers["Retry-After"] = str(fault["retry_after"])
            if fault["html"]:
                title = f"{fault['status']} {HTTPStatus(fault['status']).phrase}"
                html = (f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
                        "<hr><center>nginx</center></body></html>\n").encode()
                self._send(fault["status"], html, "text/html", headers)
            else:
                self._send(fault["status"], {"text": fault["text"], "code": fault["code"]}, extra_headers=headers)
            return
        if kind == "drop" and not fault["store"]:
            self._record(path, raw, gz, self._count(raw, gz), None, channel, "drop")
            self._drop()
            return

        n_events = 0
        try:
            if hec.max_content_length is not None and len(raw) > hec.max_content_length:
                raise _Reply(413, 27, f"Content-Length of {len(raw)} too large (maximum is {hec.max_content_length})")
            self._check_auth()
            if hec.ack:
                self._check_channel(channel)
            body = self._decode(raw, gz)
            try:
                objs = parse_body(body)
            except _Reply as r:
                n_events = len(getattr(r, "parsed", ()))
                hec._store(getattr(r, "parsed", []))
                raise
            n_events = len(objs)
            if kind == "reject":
                k = max(0, min(fault["k"], len(objs) - 1))
                hec._store(objs[:k])
                raise _Reply(400, 6, "Invalid data format", **{"invalid-event-number": k})
            try:
                validate_events(objs, hec.indexes)
            except _Reply as r:
                if r.code != 7:  # like Splunk: the events before the bad one are indexed
                    hec._store(objs[:r.extra["invalid-event-number"]])
                raise
            hec._store(objs)
            status, payload = 200, {"text": "Success", "code": 0}
            if hec.ack:
                payload["ackId"] = hec._new_ack(self._indexer, channel)
        except _Reply as r:
            status, payload = r.status, r.payload()

        self._record(path, raw, gz, n_events, None if kind == "drop" else status, channel, kind)
        if kind == "drop":
            self._drop()
            return
        if kind == "delay":
            hec._stopping.wait(fault["seconds"])
        self._send(status, payload)

    def _post_ack(self, path, raw, gz, channel):
        hec = self.server.hec
        try:
            self._check_auth()
            if not hec.ack:
                raise _Reply(400, 14, "ACK is disabled")
            self._check_channel(channel)
            try:
                query = json.loads(self._decode(raw, gz) or b"null")
                ids = query["acks"]
                if not isinstance(ids, list):
                    raise TypeError
            except (ValueError, TypeError, KeyError):
                raise _Reply(400, 6, "Invalid data format")
            status, payload = 200, {"acks": hec._query_acks(self._indexer, channel, ids)}
        except _Reply as r:
            status, payload = r.status, r.payload()
        self._record(path, raw, gz, 0, status, channel)
        self._send(status, payload)

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # TLS handshake failures etc.: not our news
        pass


class HECServer:
    """Splunk HEC on 127.0.0.1 that records every accepted event; a context manager."""

    def __init__(self, token=DEFAULT_TOKEN, *, indexes=None, ack=False, max_content_length=None, tls=None,
                 host="127.0.0.1", port=0, store_events=True, sticky_cookie=None):
        self.token = token
        self.indexes = set(indexes) if indexes is not None else None
        self.ack = ack
        self.max_content_length = max_content_length
        self.tls = tls
        self.host, self.port = host, port
        self.store_events = store_events  # False: count only (benchmarks)
        self.sticky_cookie = sticky_cookie  # the load balancer's stickiness cookie, e.g. "AWSALB"
        self._indexers: set = set()  # the cookie values handed out: one indexer each
        self.events: list[dict] = []
        self.requests: list[dict] = []
        self.event_count = 0
        self._lock = threading.Lock()
        self._faults: deque = deque()
        self._healthy = True
        self._ack_delay = 0.0
        self._ack_never = False
        self._ack_next: dict[tuple, int] = {}  # (indexer, channel) -> next ackId
        self._ack_pending: dict[tuple, dict[int, float]] = {}
        self._conns: set = set()
        self._stopping = threading.Event()
        self._tls_context = None
        self._httpd = None
        self._thread = None

    def __repr__(self):
        return f"HECServer({self.url if self._httpd else 'stopped'}, ack={self.ack})"

    # -- lifecycle --------------------------------------------------------------------------
    def start(self):
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self._tls_context = ctx
        self._stopping.clear()
        self._httpd = _Server((self.host, self.port), _Handler)
        self._httpd.hec = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"hec-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:  # idle keep-alive connections would otherwise outlive the server
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    # -- fault injection --------------------------------------------------------------------
    def fail_next(self, n, status=503, code=9, text="Server is busy", retry_after=None, html=False):
        """Answer the next n event POSTs with an error (html=True: a load balancer's HTML page)."""
        with self._lock:
            for _ in range(n):
                self._faults.append({"kind": "fail", "status": status, "code": code, "text": text,
                                     "retry_after": retry_after, "html": html})

    def delay_next(self, seconds, n=1):
        """Store the body's events, then sleep before replying: the ambiguous timeout."""
        with self._lock:
            for _ in range(n):
                self._faults.append({"kind": "delay", "seconds": seconds})

    def drop_next(self, n=1, store=False):
        """Close the connection without a reply (store=True: after storing the events)."""
        with self._lock:
            for _ in range(n):
                self._faults.append({"kind": "drop", "store": store})

    def reject_event_at(self, k, n=1):
        """400 code 6 at event k: events before k are stored, k and after are not (as Splunk does).

        k is clamped to the body's last event when the body is shorter.
        """
        with self._lock:
            for _ in range(n):
                self._faults.append({"kind": "reject", "k": k})

    def set_health(self, ok: bool):
        self._healthy = bool(ok)

    def ack_delay(self, seconds):
        """Acks for batches accepted from now on turn true only after ``seconds``."""
        self._ack_delay = float(seconds)
        self._ack_never = False

    def ack_never(self):
        """Acks for batches accepted from now on never turn true."""
        self._ack_never = True

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    # -- state used by the handler ----------------------------------------------------------
    def _next_fault(self):
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _store(self, objs):
        with self._lock:
            self.event_count += len(objs)
            if self.store_events:
                self.events.extend(objs)

    def _new_ack(self, indexer, channel):
        key = (indexer, channel)
        with self._lock:
            ack_id = self._ack_next.get(key, 0)
            self._ack_next[key] = ack_id + 1
            ready = float("inf") if self._ack_never else time.monotonic() + self._ack_delay
            self._ack_pending.setdefault(key, {})[ack_id] = ready
            return ack_id

    def _query_acks(self, indexer, channel, ids):
        now = time.monotonic()
        out = {}
        with self._lock:
            pending = self._ack_pending.get((indexer, channel), {})
            for i in ids:
                try:
                    key = int(i)
                except (TypeError, ValueError):
                    continue
                ok = key in pending and pending[key] <= now
                if ok:
                    del pending[key]  # answered true once, then forgotten
                out[str(key)] = ok
        return out

    def _track(self, conn, add):
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def summary(self) -> str:
        with self._lock:
            by_status: dict = {}
            for r in self.requests:
                by_status[r["status"]] = by_status.get(r["status"], 0) + 1
            total_bytes = sum(r["bytes"] for r in self.requests)
            return (f"events={self.event_count} requests={len(self.requests)} bytes={total_bytes} "
                    f"status={json.dumps({str(k): v for k, v in sorted(by_status.items(), key=str)})}")


def main(argv=None):
    p = argparse.ArgumentParser(description="Serve Splunk HEC on 127.0.0.1 for benchmarks; counts events.")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--token", default=DEFAULT_TOKEN)
    p.add_argument("--ack", action="store_true")
    p.add_argument("--index", action="append", help="accepted index (repeat); default: any")
    p.add_argument("--max-content-length", type=int)
    p.add_argument("--sticky-cookie", help="behind a cookie-sticky load balancer: the cookie's name, e.g. AWSALB")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--store", action="store_true", help="keep events in memory (default: count only)")
    args = p.parse_args(argv)
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    server = HECServer(args.token, indexes=args.index, ack=args.ack, max_content_length=args.max_content_length,
                       tls=tls, host=args.host, port=args.port, store_events=args.store,
                       sticky_cookie=args.sticky_cookie)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    server.start()
    print(f"READY {server.url}", flush=True)
    while not done.wait(0.5):
        pass
    server.stop()
    print(f"SUMMARY {server.summary()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
