"""HTTP to one registry host for many worker threads: pooled keep-alive connections (urllib3),
TLS, authentication (auth.py), bounded retries with backoff, counters. What is sent, and in
which order, is the caller's business: this module makes each request arrive, or says why not.
"""

from __future__ import annotations

import dataclasses
import email.utils
import itertools
import json
import logging
import os
import random
import re
import ssl
import threading
import time
import warnings
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlencode, urljoin, urlsplit

import urllib3
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, InsecureRequestWarning, NameResolutionError,
                                NewConnectionError, ReadTimeoutError, SSLError)

from regcarve import __version__
from regcarve.sinks.registry import (AccessDenied, AuthenticationFailed, NotARegistry, RegistryError,
                                     RegistryRefused, RegistryUnavailable, RegistryUnreachable, TLSFailure,
                                     first_error, parse_errors, shown)
from regcarve.sinks.registry.auth import (Authorizer, BearerToken, Challenge, parse_challenges, pick_challenge,
                                          request_token)
from regcarve.sinks.registry.credentials import Credentials

log = logging.getLogger(__name__)

USER_AGENT = f"regcarve/{__version__}"
MAX_ANSWER_BYTES = 64 << 20  # answers are JSON and manifests; a blob sent back by mistake stops here
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
UNTRUSTED_HINT = "give --ca-cert FILE with the CA that signed it, or --insecure to skip verification"
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$")


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `read` bounds every wait for the peer: the answer's first byte, each later read,
    and each send of the body while the registry does not take it."""
    connect: float = 10.0
    read: float = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """Connection failures, timeouts, 429 and 5xx (but 501/505) are tried again, at most
    `attempts` times in all, and no new attempt starts after `total_seconds`."""
    attempts: int = 8
    total_seconds: float = 180.0
    first_delay: float = 0.5
    max_delay: float = 15.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based): the registry's
        Retry-After within `max_retry_after`, else exponential backoff with jitter so that
        workers failing together do not come back together."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_delay, self.first_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach the registry. `connections` is how many requests may be in flight at once
    (and kept alive): give at least the number of worker threads, which otherwise wait."""
    plain_http: bool = False
    tls_verify: bool = True
    ca_cert: Path | None = None
    connections: int = 8
    blocksize: int = 1 << 20  # bytes per read of a file body and per send
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()
    user_agent: str = USER_AGENT


class BodySource(Protocol):
    """A request body that can be sent again: each attempt opens it afresh."""

    def open(self) -> tuple[BinaryIO, int]:
        """A binary file positioned at the body's first byte, and the body's length."""
        ...


@dataclass(frozen=True)
class FileSource:
    """`length` bytes of the file at `path` from `offset` (to its end when `length` is None)."""
    path: Path
    offset: int = 0
    length: int | None = None

    def open(self) -> tuple[BinaryIO, int]:
        f = open(self.path, "rb")
        f.seek(self.offset)
        return f, self.length if self.length is not None else os.fstat(f.fileno()).st_size - self.offset


Body = bytes | BodySource | None


@dataclass(frozen=True)
class RegistryResponse:
    """An answer: `headers` look names up case-insensitively; `attempts` > 1 means earlier
    attempts of the same request were lost in transit (and may have taken effect)."""
    status: int
    headers: urllib3.HTTPHeaderDict
    body: bytes
    url: str
    attempts: int = 1

    def location(self) -> str:
        """The Location header made absolute (registries send relative and absolute ones)."""
        value = self.headers.get("Location")
        if not value:
            raise RegistryError(f"{urlsplit(self.url).netloc}: HTTP {self.status} without a Location header",
                                host=urlsplit(self.url).netloc)
        return urljoin(self.url, value)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class CounterSnapshot:
    """`requests`: HTTP requests to the registry by method, every attempt counted (token
    requests are in `tokens_fetched` only); `bytes_sent`: request body bytes, every attempt."""
    requests: Mapping[str, int] = field(default_factory=dict)
    retries: int = 0
    tokens_fetched: int = 0
    bytes_sent: int = 0


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._retries = self._tokens = self._bytes = 0

    def add(self, *, method: str | None = None, retries: int = 0, tokens: int = 0, sent: int = 0) -> None:
        with self._lock:
            if method is not None:
                self._requests[method] += 1
            self._retries += retries
            self._tokens += tokens
            self._bytes += sent

    def snapshot(self) -> CounterSnapshot:
        with self._lock:
            return CounterSnapshot(dict(self._requests), self._retries, self._tokens, self._bytes)


class _CountedReader:
    """A file body as urllib3 reads it (`read(blocksize)` until b""), cut at `length` bytes
    and counted as it goes out."""

    def __init__(self, f: BinaryIO, length: int, counters: _Counters):
        self._f, self._left, self._counters = f, length, counters

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._f.read(size) if size else b""
        self._left -= len(data)
        self._counters.add(sent=len(data))
        return data


def add_query(url: str, params: Mapping[str, str]) -> str:
    """`url` with `params` appended to its query, e.g. an upload Location plus `digest=`."""
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def _retryable(status: int) -> bool:
    return status == 429 or (status >= 500 and status not in (501, 505))


def _tls_failure(host: str, error: SSLError) -> TLSFailure | None:
    """A TLSFailure for handshake errors no retry can fix; None for the others."""
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text or "Hostname mismatch" in text:
        reason = text.split("certificate verify failed:")[-1].split("(_ssl")[0].strip(" )'\"")
        return TLSFailure(f"{host}: TLS certificate not trusted ({reason}); {UNTRUSTED_HINT}", host=host)
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return TLSFailure(f"{host}: answers plain HTTP, not TLS; use --plain-http if that is intended",
                          host=host)
    return None


class _Failure(Exception):
    """One attempt got no answer; `connect`: no connection was made; `final`: do not retry."""

    def __init__(self, reason: str, *, connect: bool, final: bool = False):
        super().__init__(reason)
        self.connect, self.final = connect, final


def _failure(error: HTTPError, timeouts: Timeouts, read_timeout: float) -> _Failure:
    if isinstance(error, NameResolutionError):
        return _Failure("host name not found", connect=True, final=True)
    if isinstance(error, NewConnectionError):
        return _Failure("cannot connect: " + str(error).split("Failed to establish a new connection: ")[-1],
                        connect=True)
    if isinstance(error, ConnectTimeoutError):
        return _Failure(f"no connection within {timeouts.connect:g} s", connect=True)
    if isinstance(error, ReadTimeoutError):
        return _Failure(f"no answer within {read_timeout:g} s", connect=False)
    cause = error.args[-1] if error.args else error
    return _Failure(f"connection dropped ({type(cause).__name__})", connect=False)


class _Sender:
    """Sends requests through the pool and retries what is worth retrying. No auth here."""

    def __init__(self, host: str, settings: ConnectionSettings, counters: _Counters):
        self.host, self.settings, self.counters = host, settings, counters
        self.pool = urllib3.PoolManager(num_pools=8, maxsize=settings.connections, block=True,
                                        blocksize=settings.blocksize, **self._tls_options())

    def _tls_options(self) -> dict[str, Any]:
        if not self.settings.tls_verify:
            # the user asked for it explicitly; a warning per request would bury the output
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            return {"cert_reqs": "CERT_NONE", "assert_hostname": False}
        context = ssl.create_default_context()
        if self.settings.ca_cert is not None:
            try:
                context.load_verify_locations(cafile=str(self.settings.ca_cert))
            except (OSError, ssl.SSLError) as e:
                raise TLSFailure(f"{self.host}: cannot use --ca-cert {self.settings.ca_cert}: "
                                 f"{getattr(e, 'strerror', None) or e}", host=self.host) from None
        return {"ssl_context": context}

    def send(self, method: str, url: str, headers: Mapping[str, str], body: Body, *,
             read_timeout: float | None = None, retry: RetryPolicy | None = None,
             counted: bool = True) -> RegistryResponse:
        """The first answer that is not worth retrying, or RegistryUnavailable/Unreachable."""
        policy = retry or self.settings.retry
        started = time.monotonic()
        for attempt in itertools.count(1):
            try:
                answer: RegistryResponse | _Failure = self._attempt(method, url, headers, body, read_timeout, counted)
            except _Failure as failure:
                answer, wait = failure, policy.delay(attempt, None)
            else:
                if not _retryable(answer.status):
                    return dataclasses.replace(answer, attempts=attempt)
                wait = policy.delay(attempt, _retry_after(answer.headers.get("Retry-After")))
            elapsed = time.monotonic() - started
            final = isinstance(answer, _Failure) and answer.final
            if final or attempt >= policy.attempts or elapsed + wait > policy.total_seconds:
                raise self._exhausted(method, url, answer, attempt, elapsed)
            self.counters.add(retries=1)
            log.info("%s: %s %s: %s; retrying in %.1f s", self.host, method, shown(url, self.host),
                     _describe(answer), wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _attempt(self, method: str, url: str, headers: Mapping[str, str], body: Body,
                 read_timeout: float | None, counted: bool) -> RegistryResponse:
        timeouts = self.settings.timeouts
        read = read_timeout if read_timeout is not None else timeouts.read
        headers = {"User-Agent": self.settings.user_agent, **headers}
        opened: BinaryIO | None = None
        payload: Any = body
        if body is not None and not isinstance(body, (bytes, bytearray)):
            opened, length = body.open()
            headers["Content-Length"] = str(length)
            payload = _CountedReader(opened, length, self.counters)
        elif body:
            self.counters.add(sent=len(body))
        if counted:
            self.counters.add(method=method)
        try:
            raw = self.pool.urlopen(method, url, body=payload, headers=headers, redirect=False, retries=False,
                                    timeout=urllib3.Timeout(connect=timeouts.connect, read=read),
                                    preload_content=False)
            return RegistryResponse(raw.status, raw.headers, self._read_answer(raw, method, url), url)
        except SSLError as e:
            raise _tls_failure(urlsplit(url).netloc, e) or _Failure(f"TLS failure ({e})", connect=True) from None
        except HTTPError as e:
            raise _failure(e, timeouts, read) from None
        finally:
            if opened is not None:
                opened.close()

    def _read_answer(self, raw: urllib3.BaseHTTPResponse, method: str, url: str) -> bytes:
        pieces, size = [], 0
        try:
            for piece in raw.stream(1 << 20):
                size += len(piece)
                if size > MAX_ANSWER_BYTES:
                    raw.close()
                    raise RegistryError(f"{self.host}: {method} {shown(url, self.host)}: answer larger than "
                                        f"{MAX_ANSWER_BYTES >> 20} MiB", host=self.host)
                pieces.append(piece)
        finally:
            raw.release_conn()
        return b"".join(pieces)

    def _exhausted(self, method: str, url: str, answer: RegistryResponse | _Failure, attempts: int,
                   elapsed: float) -> RegistryUnavailable:
        tried = f"{attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.0f} s"
        message = f"{self.host}: {method} {shown(url, self.host)}: {_describe(answer)} ({tried})"
        if isinstance(answer, _Failure):
            kind = RegistryUnreachable if answer.connect else RegistryUnavailable
            return kind(message, host=self.host, attempts=attempts)
        return RegistryUnavailable(message, host=self.host, attempts=attempts, status=answer.status,
                                   errors=parse_errors(answer.body))


def _describe(answer: RegistryResponse | _Failure) -> str:
    if isinstance(answer, _Failure):
        return str(answer)
    return f"HTTP {answer.status}{first_error(parse_errors(answer.body))}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class Transport:
    """Requests to one registry (`HOST[:PORT]`), safe to share between worker threads.

    The first request pings (`GET /v2/`) to learn how the registry authenticates. Each request
    names the scopes it needs (`("repository:team/web:pull,push", "repository:team/base:pull")`);
    one bearer token is fetched per scope set and reused until shortly before it expires.
    """

    def __init__(self, host: str, credentials: Credentials | None = None,
                 settings: ConnectionSettings = ConnectionSettings()):
        if not _HOST.match(host):
            raise ValueError(f"registry {host!r}: expected HOST[:PORT], without scheme or path")
        self.host = host
        self.settings = settings
        self.base_url = f"{'http' if settings.plain_http else 'https'}://{self.host}"
        self._origin = _origin(self.base_url)
        self._counters = _Counters()
        self._sender = _Sender(self.host, settings, self._counters)
        self._auth = Authorizer(credentials, self._fetch_token)
        self._pinged = False
        self._ping_lock = threading.Lock()

    @property
    def counters(self) -> CounterSnapshot:
        return self._counters.snapshot()

    def close(self) -> None:
        self._sender.pool.clear()

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Transport({self.base_url!r}, credentials={self._auth.credentials!r})"

    def resolve(self, path_or_url: str) -> str:
        """An absolute URL: `/v2/...` and relative Locations against the registry, absolute kept."""
        return urljoin(self.base_url + "/", path_or_url)

    def _is_registry(self, url: str) -> bool:
        return _origin(url) == self._origin

    # --- ping and credentials --------------------------------------------------------------
    def ping(self, retry: RetryPolicy | None = None) -> Challenge | None:
        """`GET /v2/`: the challenge to answer (None when the registry wants no credentials).
        NotARegistry when the answer is not a registry's; RegistryUnreachable/TLSFailure when
        there is no usable connection."""
        response = self._sender.send("GET", self.base_url + "/v2/", {}, None, retry=retry)
        if response.status == 200 and not response.body.lstrip().startswith(b"<"):  # not a web page
            challenge = None
        elif response.status == 401:
            challenge = pick_challenge(parse_challenges(response.headers.getlist("WWW-Authenticate")))
            if challenge is None:
                raise NotARegistry(f"{self.host}: GET /v2/ answered 401 without a Basic or Bearer challenge",
                                   host=self.host)
        else:
            hint = "; it speaks HTTPS: leave out --plain-http" if b"HTTPS server" in response.body else ""
            raise NotARegistry(f"{self.host}: GET /v2/ answered HTTP {response.status}: not a registry's "
                               f"API{hint}", host=self.host)
        self._auth.learn(challenge)
        self._pinged = True
        return challenge

    def _ensure_pinged(self) -> None:
        if not self._pinged:
            with self._ping_lock:
                if not self._pinged:
                    self.ping()

    def check_credentials(self, scope: str | None = None, retry: RetryPolicy | None = None) -> None:
        """Prove the credentials before anything is pushed: a token for `scope` (Bearer), or an
        authenticated GET /v2/ (Basic). AuthenticationFailed when they are refused. `retry`: for this
        first contact (a registry that is not there should be said so soon)."""
        if not self._pinged:
            with self._ping_lock:
                self.ping(retry)
        challenge, credentials = self._auth.challenge, self._auth.credentials
        if challenge is None or credentials is None:
            return  # nothing asked, or nothing to prove: refusals come with the first request
        if challenge.scheme == "bearer":
            self._auth.token((scope,) if scope else ())
            return
        headers = {"Authorization": credentials.basic_authorization()}
        response = self._sender.send("GET", self.base_url + "/v2/", headers, None, retry=retry)
        if response.status in (401, 403):
            raise self._wrong_password(response.status)
        if response.status != 200:
            raise NotARegistry(f"{self.host}: GET /v2/ answered HTTP {response.status}", host=self.host)

    # --- requests --------------------------------------------------------------------------
    def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...]) -> BearerToken:
        def get(url: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
            answer = self._sender.send("GET", url, headers, None, counted=False)
            return answer.status, answer.body

        token = request_token(get, self.host, challenge, scopes, self._auth.credentials,
                              allow_plain_http=self.settings.plain_http)
        self._counters.add(tokens=1)
        return token

    def request(self, method: str, path_or_url: str, *, scopes: Collection[str] = (),
                headers: Mapping[str, str] | None = None, body: Body = None,
                expect: Collection[int] = (200,), read_timeout: float | None = None,
                retry: RetryPolicy | None = None) -> RegistryResponse:
        """Send one request (`/v2/...` or an absolute URL such as an upload Location) and return
        the answer whose status is in `expect`. `body`: bytes, or a BodySource reopened for each
        attempt and streamed. GET/HEAD follow redirects (credentials go to the registry only).
        Raises RegistryRefused/AccessDenied/AuthenticationFailed for refusals,
        RegistryUnavailable/RegistryUnreachable when the retries ran out, TLSFailure."""
        self._ensure_pinged()
        scope_set = tuple(scopes)
        url, redirects, reauthorized = self.resolve(path_or_url), 0, False
        while True:
            own = self._is_registry(url)
            sent = self._auth.authorization(scope_set) if own else None
            all_headers = {**(headers or {}), **({"Authorization": sent} if sent else {})}
            response = self._sender.send(method, url, all_headers, body, read_timeout=read_timeout, retry=retry)
            if response.status in expect:
                return response
            if response.status == 401 and own and not reauthorized:
                reauthorized = True
                challenges = parse_challenges(response.headers.getlist("WWW-Authenticate"))
                if self._auth.retry_after_unauthorized(scope_set, sent, challenges):
                    continue
            location = response.headers.get("Location")
            if response.status in _REDIRECTS and location and method in ("GET", "HEAD") \
                    and redirects < MAX_REDIRECTS:
                url, redirects = urljoin(url, location), redirects + 1
                continue
            raise self._refusal(method, url, response, sent, scope_set)

    def _refusal(self, method: str, url: str, response: RegistryResponse, sent: str | None,
                 scopes: tuple[str, ...]) -> RegistryError:
        credentials = self._auth.credentials
        if response.status in (401, 403) and credentials is None:
            return AuthenticationFailed(f"{self.host}: {method} {shown(url)} needs credentials and none were "
                                        "given (--creds, --password-stdin or an auth file)", host=self.host)
        if response.status == 401 and sent and sent.lower().startswith("basic "):
            return self._wrong_password(401)
        kind, suffix = RegistryRefused, ""
        if response.status in (401, 403):
            asked = f" (scopes {' '.join(scopes)})" if scopes else ""
            kind, suffix = AccessDenied, f" for user {credentials.username!r}{asked}"
        return kind.from_answer(self.host, method, url, response.status, response.body, attempts=response.attempts,
                                suffix=suffix)


    def _wrong_password(self, status: int) -> AuthenticationFailed:
        user = self._auth.credentials.username if self._auth.credentials else ""
        return AuthenticationFailed(f"{self.host}: user {user!r} was refused (HTTP {status}): wrong user name "
                                    "or password", host=self.host)
