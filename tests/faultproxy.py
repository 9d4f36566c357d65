"""An HTTP/1.1 reverse proxy with injectable faults, in front of a plain-HTTP registry.

Why: a push client must survive what networks and registries do to it (a 503 on the manifest
PUT, a 429 with Retry-After, a connection dropped mid-upload, a slow answer) and must not upload
a blob twice. Real registries do not misbehave on demand, so the client talks to this proxy:
it forwards everything unchanged (the Host header too, so Distribution's upload `Location`
URLs point back at the proxy), misbehaves where a rule says so, and logs every request so tests
can count what the client sent.

The client side is HTTP/1.1 with keep-alive (clients pool connections; `LoggedRequest.conn`
tells which connection carried a request). Request and response bodies are streamed, with
Content-Length or chunked framing. Towards the registry each request gets a fresh connection,
so a stale upstream connection can never eat a streamed body. When the registry cannot be
reached, the client connection is closed without an answer (logged with status None).
"""

from __future__ import annotations

import http.client
import json
import itertools
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Literal

from serverthread import BackgroundServer

Action = Literal["drop", "drop_after_body", "drop_after_forward", "status", "stall"]
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
              "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect"}
PIECE = 64 * 1024
_UPLOAD = re.compile(r"^/v2/(?P<repo>.+)/blobs/uploads/(?P<uuid>[^/]*)$")
_ERROR_CODES = {429: "TOOMANYREQUESTS", 503: "UNAVAILABLE", 500: "UNKNOWN", 401: "UNAUTHORIZED"}


@dataclass
class Rule:
    """Misbehave on requests whose method (or "*") and path (regex, searched, no query) match,
    from the `first`-th matching request through the `last`-th (1-based; None: no end).

    drop:               close the connection without reading the body or answering.
    drop_after_body:    read the whole request body (not forwarded), then close.
    drop_after_forward: forward and let the registry act, then close instead of answering.
    status:             answer `status` (e.g. 503, 429 + Retry-After) without forwarding.
    stall:              wait `seconds`, then forward.
    """
    method: str
    path: str
    action: Action
    status: int = 503
    retry_after: str | None = None
    body: bytes | None = None  # status body; default: a Distribution-style JSON error
    seconds: float = 0.0
    first: int = 1
    last: int | None = None
    matched: int = 0  # matching requests seen so far
    fired: int = 0  # how often the action was applied

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and re.search(self.path, path) is not None

    def in_window(self) -> bool:
        return self.first <= self.matched and (self.last is None or self.matched <= self.last)


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the proxy saw it. `status` is None when the client got no answer."""
    conn: int  # client connection number: equal numbers = one kept-alive connection
    method: str
    path: str
    query: str
    status: int | None
    request_bytes: int  # body bytes received from the client (de-chunked)
    response_bytes: int  # body bytes sent to the client
    chunked: bool  # the request body came chunked
    action: str  # "forward" or the rule action applied
    seq: int = 0  # order of arrival: handlers on other connections may log out of that order
    at: float = field(default_factory=time.monotonic)

    def param(self, name: str) -> str | None:
        values = urllib.parse.parse_qs(self.query).get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class BlobUpload:
    """One upload session (POST .../uploads/ then PATCH/PUT on its Location), from the log."""
    repo: str
    uuid: str
    digest: str | None  # from the closing PUT's ?digest=
    body_bytes: int  # over all its requests
    status: int | None  # of the closing PUT (201 when stored)


class FaultProxy:
    """A proxy on a free 127.0.0.1 port forwarding to `upstream` ("host:port", plain HTTP)."""

    def __init__(self, upstream: str, *, idle_timeout: float = 30.0):
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._arrivals = 0
        # Handlers answer first and log after; a client may read the log in between. Readers
        # wait until no answered request is still unlogged (`_answering` == 0).
        self._settled = threading.Condition(self._lock)
        self._answering = 0
        self._conn_ids = itertools.count(1)
        self._server = BackgroundServer(_ProxyHandler, idle_timeout=idle_timeout)
        self._server.server.proxy = self  # type: ignore[attr-defined]
        self.port = self._server.port
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"

    def start(self) -> "FaultProxy":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- rules -----------------------------------------------------------------------------
    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def drop(self, method: str, path: str, *, first: int = 1, times: int | None = 1,
             after: Literal["headers", "body", "forward"] = "headers") -> Rule:
        action: Action = {"headers": "drop", "body": "drop_after_body", "forward": "drop_after_forward"}[after]
        return self.add(Rule(method, path, action, first=first, last=_last(first, times)))

    def fail(self, method: str, path: str, status: int = 503, *, retry_after: str | None = None,
             first: int = 1, times: int | None = 1, body: bytes | None = None) -> Rule:
        return self.add(Rule(method, path, "status", status=status, retry_after=retry_after, body=body,
                             first=first, last=_last(first, times)))

    def stall(self, method: str, path: str, seconds: float, *, first: int = 1, times: int | None = 1) -> Rule:
        return self.add(Rule(method, path, "stall", seconds=seconds, first=first, last=_last(first, times)))

    def clear_rules(self) -> None:
        with self._lock:
            self.rules.clear()

    def _pick(self, method: str, path: str) -> tuple[int, Rule | None]:
        """The request's arrival number, and the rule that fires for it: the request is counted against
        every matching rule; the first in its window fires."""
        chosen = None
        with self._lock:
            self._arrivals += 1
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.matched += 1
                    if chosen is None and rule.in_window():
                        rule.fired += 1
                        chosen = rule
            return self._arrivals, chosen

    # --- the log ---------------------------------------------------------------------------
    def record(self, entry: LoggedRequest, answered: bool) -> None:
        with self._settled:
            self.log.append(entry)
            if answered:
                self._answering -= 1
            self._settled.notify_all()

    def answering(self) -> None:
        """A handler is about to send response bytes for a request it has not logged yet."""
        with self._settled:
            self._answering += 1

    def requests(self, method: str = "*", path: str = "", *, with_body: bool | None = None,
                 status: int | None = None) -> list[LoggedRequest]:
        with self._settled:
            self._settled.wait_for(lambda: self._answering == 0, timeout=5)
            entries = sorted(self.log, key=lambda e: e.seq)
        return [e for e in entries if method in ("*", e.method) and re.search(path, e.path)
                and (with_body is None or (e.request_bytes > 0) == with_body)
                and (status is None or e.status == status)]

    def count(self, method: str = "*", path: str = "", **kw) -> int:
        """How many logged requests match, e.g. count("PUT", r"/manifests/")."""
        return len(self.requests(method, path, **kw))

    def blob_uploads(self) -> list[BlobUpload]:
        """Upload sessions in order, by the uuid in their path (a monolithic POST ?digest=
        with a body counts as a session of its own)."""
        sessions: dict[str, dict] = {}
        for e in self.requests():
            m = _UPLOAD.match(e.path)
            if not m or (e.method == "POST" and not e.request_bytes):
                continue
            key = m["uuid"] or f"post-{e.conn}-{e.at}"
            s = sessions.setdefault(key, {"repo": m["repo"], "digest": None, "bytes": 0, "status": None})
            s["bytes"] += e.request_bytes
            if e.method in ("PUT", "POST") and e.param("digest"):
                s["digest"], s["status"] = e.param("digest"), e.status
        return [BlobUpload(s["repo"], k, s["digest"], s["bytes"], s["status"]) for k, s in sessions.items()]

    def uploads_with_body(self, digest: str) -> int:
        """How often the client sent bytes for `digest` (1 for a clean push)."""
        return sum(1 for u in self.blob_uploads() if u.digest == digest and u.body_bytes > 0)

    def clear(self) -> None:
        """Forget the log (rules and their counters stay)."""
        with self._lock:
            self.log.clear()


def _last(first: int, times: int | None) -> int | None:
    return None if times is None else first + times - 1


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        pass  # the proxy keeps its own log

    def setup(self) -> None:
        super().setup()
        self.proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        self.conn_id = next(self.proxy._conn_ids)

    # every method goes through the same path
    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _body(self) -> Iterator[bytes]:
        """The request body in pieces, de-chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                left = size
                while left:
                    piece = self.rfile.read(min(left, PIECE))
                    if not piece:
                        raise ConnectionError("client closed inside a chunk")
                    left -= len(piece)
                    yield piece
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                piece = self.rfile.read(min(left, PIECE))
                if not piece:
                    raise ConnectionError("client closed inside the body")
                left -= len(piece)
                yield piece

    def _handle(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        seq, rule = self.proxy._pick(self.command, url.path)
        action = rule.action if rule else "forward"
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        result = {"status": None, "in": 0, "out": 0}
        self._answered = False
        try:
            if action == "stall":
                self.server.stopping.wait(rule.seconds)  # type: ignore[attr-defined]
            if action == "drop":
                self.close_connection = True
            elif action == "drop_after_body":
                result["in"] = sum(len(p) for p in self._body())
                self.close_connection = True
            elif action == "status":
                result["in"] = sum(len(p) for p in self._body())
                self._answer(rule, result)
            else:
                self._forward(result, answer=action != "drop_after_forward")
        finally:
            self.proxy.record(LoggedRequest(self.conn_id, self.command, url.path, url.query, result["status"],
                                            result["in"], result["out"], chunked, action, seq), self._answered)

    def _start_answer(self) -> None:
        self._answered = True
        self.proxy.answering()

    def _answer(self, rule: Rule, result: dict) -> None:
        body = rule.body if rule.body is not None else json.dumps({"errors": [{
            "code": _ERROR_CODES.get(rule.status, "UNKNOWN"), "message": "injected by FaultProxy"}]}).encode()
        self._start_answer()
        self.send_response_only(rule.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if rule.retry_after is not None:
            self.send_header("Retry-After", rule.retry_after)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            result["out"] = len(body)
        result["status"] = rule.status

    def _forward(self, result: dict, *, answer: bool) -> None:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        upstream = http.client.HTTPConnection(self.proxy.upstream, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)  # Host included, unchanged
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.putheader("Connection", "close")
            upstream.endheaders()
            for piece in self._body():
                result["in"] += len(piece)
                upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                upstream.send(b"0\r\n\r\n")
            resp = upstream.getresponse()
            if not answer:
                resp.read()
                self.close_connection = True
                return
            self._relay(resp, result)
        finally:
            upstream.close()

    def _relay(self, resp: http.client.HTTPResponse, result: dict) -> None:
        """Send the registry's answer on, streaming its body with the framing it came with."""
        has_body = self.command != "HEAD" and resp.status not in (204, 304) and resp.status >= 200
        rechunk = has_body and resp.chunked
        self._start_answer()
        self.send_response_only(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        elif has_body and resp.length is None:
            self.close_connection = True  # body delimited by close
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        result["status"] = resp.status
        while has_body:
            piece = resp.read(PIECE)
            if not piece:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if rechunk else piece)
            result["out"] += len(piece)
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
