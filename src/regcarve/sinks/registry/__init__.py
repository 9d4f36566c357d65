"""Talking HTTP to one registry: `transport.Transport` (pooled, retried, authenticated requests),
`auth` (challenges and bearer tokens), `credentials` (where user and password come from).

The exceptions below are what every layer raises. Each message is one line that names the
registry host and never holds a password, a token or an Authorization header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class ErrorDetail:
    """One entry of a registry's JSON error body: {"errors": [{"code", "message", "detail"}]}."""
    code: str
    message: str
    detail: object = None


class RegistryError(Exception):
    """Base of every failure talking to a registry."""

    def __init__(self, message: str, *, host: str):
        super().__init__(message)
        self.host = host


class RegistryUnavailable(RegistryError):
    """The bounded retries ran out: connection failures, timeouts, 5xx or 429 on every attempt.
    `status` and `errors` are those of the last answer (None/() when there was none)."""

    def __init__(self, message: str, *, host: str, attempts: int, status: int | None = None,
                 errors: tuple[ErrorDetail, ...] = ()):
        super().__init__(message, host=host)
        self.attempts = attempts
        self.status = status
        self.errors = errors


class RegistryUnreachable(RegistryUnavailable):
    """No connection could be made (refused, no route, name unknown, connect timeout)."""


class TLSFailure(RegistryError):
    """The TLS handshake failed for a reason retrying cannot fix: an untrusted or mismatched
    certificate, or a plain-HTTP server on the port."""


class NotARegistry(RegistryError):
    """GET /v2/ answered something no registry answers (404, an HTML page, 401 without a challenge)."""


class AuthenticationFailed(RegistryError):
    """The credentials were refused (by the token service or the registry's Basic auth), or the
    registry wants credentials and none were given."""


class RegistryRefused(RegistryError):
    """A request answered with a status the caller did not expect and retrying cannot change
    (4xx other than 401/429). `code`/`message` are the first JSON error, `errors` all of them.
    `attempts` > 1 means an earlier attempt was lost in transit and may have taken effect."""

    def __init__(self, message: str, *, host: str, method: str, url: str, status: int,
                 errors: tuple[ErrorDetail, ...] = (), attempts: int = 1):
        super().__init__(message, host=host)
        self.method = method
        self.url = url
        self.status = status
        self.errors = errors
        self.attempts = attempts

    @classmethod
    def from_answer(cls, host: str, method: str, url: str, status: int, body: bytes, *, attempts: int = 1,
                    suffix: str = "") -> "RegistryRefused":
        """The refusal of `method url` answered `status` with `body` (a JSON error body or not)."""
        errors = parse_errors(body)
        return cls(f"{host}: {method} {shown(url, host)}: HTTP {status}{first_error(errors)}{suffix}", host=host,
                   method=method, url=url, status=status, errors=errors, attempts=attempts)

    @property
    def code(self) -> str | None:
        return self.errors[0].code if self.errors else None

    @property
    def error_message(self) -> str | None:
        return self.errors[0].message if self.errors else None


class AccessDenied(RegistryRefused):
    """401/403 although fresh credentials or a fresh token were sent: authenticated, not permitted."""


def parse_errors(body: bytes) -> tuple[ErrorDetail, ...]:
    """The entries of a registry's JSON error body; () when it has none or is not JSON."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        return ()
    entries = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return ()
    return tuple(ErrorDetail(str(e.get("code", "")), str(e.get("message", "")), e.get("detail"))
                 for e in entries if isinstance(e, dict))


def first_error(errors: tuple[ErrorDetail, ...]) -> str:
    """` CODE: message` of the first error, as messages append it; "" when there is none."""
    return f" {errors[0].code}: {errors[0].message}" if errors else ""


def shown(url: str, host: str | None = None) -> str:
    """A URL as messages show it: without the query (upload state, scopes), and without the
    host when it is the registry's own `host`."""
    parts = urlsplit(url)
    return (parts.path or "/") if host in (None, parts.netloc) else f"{parts.netloc}{parts.path}"
