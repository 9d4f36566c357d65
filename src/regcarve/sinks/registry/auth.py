"""Registry authentication: WWW-Authenticate challenges, bearer tokens cached per scope set, and
the choice of the Authorization header for each request.

Nothing here speaks HTTP: the transport hands in a function that fetches a token from the realm.
Token flow: Distribution's docs/content/spec/auth/token.md; scope grammar: auth/scope.md.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from regcarve.sinks.registry import AuthenticationFailed, RegistryError, RegistryRefused
from regcarve.sinks.registry.credentials import Credentials

# token.md: "When omitted, this defaults to 60 seconds."
DEFAULT_TOKEN_LIFETIME = 60.0
# A token is replaced this long before it expires (10 % of its life, at most 30 s), so a request
# started just before expiry still reaches the registry with a valid token.
REFRESH_FRACTION = 0.1
MAX_REFRESH_MARGIN = 30.0

_TCHAR = r"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_TOKEN = re.compile(_TCHAR + "+")
_PARAM = re.compile(rf"({_TCHAR}+)[ \t]*=[ \t]*(?:\"((?:[^\"\\]|\\.)*)\"|({_TCHAR}+))")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_SPACES = re.compile(r"[ \t]*")
_SEPARATORS = re.compile(r"[ \t,]*")
_QUOTED_PAIR = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header (RFC 7235); `scheme` and parameter names are
    lower-cased, values kept as sent."""
    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        """Scopes the registry asked for; several are space-separated (scope.md; Harbor does that)."""
        return tuple(self.params.get("scope", "").split())


def parse_challenges(headers: str | Iterable[str]) -> list[Challenge]:
    """Every challenge in one or several WWW-Authenticate header values, in order. Quoted values
    may hold commas and escaped quotes. Parsing is lenient: text it cannot read ends a header."""
    values = [headers] if isinstance(headers, str) else list(headers)
    challenges: list[Challenge] = []
    for text in values:
        pos = 0
        while True:
            pos = _SEPARATORS.match(text, pos).end()
            scheme = _TOKEN.match(text, pos)
            if scheme is None:
                break
            params, token68, pos = _parse_params(text, scheme.end())
            challenges.append(Challenge(scheme.group().lower(), params, token68))
            if pos < len(text) and text[pos] != ",":
                break  # unreadable: an unterminated quote, a stray character
    return challenges


def _parse_params(text: str, pos: int) -> tuple[dict[str, str], str | None, int]:
    """The auth-params (or token68) after a scheme; returns them and where the next challenge starts."""
    start = _SPACES.match(text, pos).end()
    param = _PARAM.match(text, start) if start > pos else None
    if param is None:
        blob = _TOKEN68.match(text, start) if start > pos else None
        after = _SPACES.match(text, blob.end()).end() if blob else start
        if blob and (after == len(text) or text[after] == ","):
            return {}, blob.group(), after
        return {}, None, start
    params: dict[str, str] = {}
    while param is not None:
        name, quoted, plain = param.groups()
        params[name.lower()] = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else plain
        end = _SPACES.match(text, param.end()).end()
        if not text.startswith(",", end):
            return params, None, end
        param = _PARAM.match(text, _SEPARATORS.match(text, end).end())
    return params, None, end  # the text after the comma is the next challenge


def pick_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The challenge to answer: Bearer before Basic; None when neither is offered."""
    offered = list(challenges)
    for scheme in ("bearer", "basic"):
        for challenge in offered:
            if challenge.scheme == scheme:
                return challenge
    return None


@dataclass(frozen=True, repr=False)
class BearerToken:
    """A token from the realm for `scopes`; `refresh_at`/`expires_at` on the monotonic clock."""
    value: str
    scopes: tuple[str, ...]
    refresh_at: float
    expires_at: float

    def fresh(self, now: float) -> bool:
        return now < self.refresh_at

    def __repr__(self) -> str:
        return f"BearerToken(scopes={self.scopes!r}, value=<redacted>)"


def token_from_response(body: bytes, scopes: tuple[str, ...], asked_at: float) -> BearerToken:
    """The token in a realm's JSON answer (`token`, or `access_token` as OAuth servers name it).
    Its lifetime counts from `asked_at` (when the request left), not `issued_at`: clocks differ."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError("the answer is not JSON") from None
    value = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    if not isinstance(value, str) or not value:
        raise ValueError("the answer holds no token")
    expires_in = doc.get("expires_in")
    valid = isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0
    lifetime = float(expires_in) if valid else DEFAULT_TOKEN_LIFETIME
    margin = min(MAX_REFRESH_MARGIN, lifetime * REFRESH_FRACTION)
    return BearerToken(value, scopes, asked_at + lifetime - margin, asked_at + lifetime)


# (url, headers) -> (status, body): a GET through the transport, with its retries
Getter = Callable[[str, Mapping[str, str]], tuple[int, bytes]]


def request_token(get: Getter, host: str, challenge: Challenge, scopes: tuple[str, ...],
                  credentials: Credentials | None, *, allow_plain_http: bool) -> BearerToken:
    """`GET realm?service=…&scope=…&scope=…` with Basic credentials (or anonymously), as
    token.md describes. The password goes to a plain-HTTP realm only if `allow_plain_http`."""
    realm = urlsplit(challenge.realm or "")
    if realm.scheme not in ("http", "https") or not realm.netloc:
        raise RegistryError(f"{host}: Bearer challenge without a usable realm", host=host)
    where = f"token service {realm.netloc}{realm.path}"
    if credentials is not None and realm.scheme == "http" and not allow_plain_http:
        raise AuthenticationFailed(f"{host}: the {where} is plain HTTP; the password is not sent there "
                                   "unless --plain-http is given", host=host)
    query = [("service", challenge.service)] if challenge.service else []
    query += [("account", credentials.username)] if credentials else []
    query += [("scope", scope) for scope in scopes]
    url = (challenge.realm or "") + ("&" if realm.query else "?") + urlencode(query)
    headers = {"Authorization": credentials.basic_authorization()} if credentials else {}
    asked_at = time.monotonic()
    status, body = get(url, headers)
    if status in (401, 403):
        who = f"user {credentials.username!r}" if credentials else "anonymous access"
        raise AuthenticationFailed(f"{host}: {who} refused by the {where} (HTTP {status})", host=host)
    if status != 200:
        raise RegistryRefused.from_answer(host, "GET", url, status, body)
    try:
        return token_from_response(body, scopes, asked_at)
    except ValueError as e:
        raise RegistryError(f"{host}: {where}: {e}", host=host) from None


TokenFetcher = Callable[[tuple[str, ...]], BearerToken]


class TokenCache:
    """Bearer tokens per scope set (the set the caller names, in any order). Each set has a lock:
    threads needing the same set wait for one fetch; other sets are fetched meanwhile."""

    def __init__(self, fetch: TokenFetcher, clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._clock = clock
        self._tokens: dict[frozenset[str], BearerToken] = {}
        self._learned: dict[frozenset[str], tuple[str, ...]] = {}  # scopes a challenge added
        self._locks: dict[frozenset[str], threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock_for(self, key: frozenset[str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _asked(self, key: frozenset[str], scopes: tuple[str, ...]) -> tuple[str, ...]:
        # learned scopes first: some token services only read the first scope parameter
        return tuple(dict.fromkeys(self._learned.get(key, ()) + scopes))

    def token(self, scopes: tuple[str, ...]) -> BearerToken:
        key = frozenset(scopes)
        current = self._tokens.get(key)
        if current is not None and current.fresh(self._clock()):
            return current
        with self._lock_for(key):
            current = self._tokens.get(key)
            if current is None or not current.fresh(self._clock()):
                current = self._tokens[key] = self._fetch(self._asked(key, scopes))
            return current

    def renew(self, scopes: tuple[str, ...], stale: str | None, more_scopes: tuple[str, ...] = ()) -> None:
        """After a 401: fetch again (asking `more_scopes` too) unless another thread already
        replaced the token `stale` that was refused and nothing new is asked."""
        key = frozenset(scopes)
        with self._lock_for(key):
            known = set(self._learned.get(key, ())) | key
            added = tuple(s for s in more_scopes if s not in known)
            if added:
                self._learned[key] = added + self._learned.get(key, ())
            current = self._tokens.get(key)
            if added or current is None or current.value == stale or not current.fresh(self._clock()):
                self._tokens[key] = self._fetch(self._asked(key, scopes))


ChallengeTokenFetcher = Callable[[Challenge, tuple[str, ...]], BearerToken]


class Authorizer:
    """Chooses each request's Authorization header from the registry's challenge (learned by the
    ping, or from a later 401) and decides whether a 401 is worth one more try."""

    def __init__(self, credentials: Credentials | None, fetch_token: ChallengeTokenFetcher):
        self.credentials = credentials
        self._challenge: Challenge | None = None
        self._lock = threading.Lock()
        self._tokens = TokenCache(lambda scopes: fetch_token(self._bearer_challenge(), scopes))

    @property
    def challenge(self) -> Challenge | None:
        return self._challenge

    def learn(self, challenge: Challenge | None) -> None:
        with self._lock:
            self._challenge = challenge

    def _bearer_challenge(self) -> Challenge:
        challenge = self._challenge
        assert challenge is not None and challenge.scheme == "bearer"
        return challenge

    def token(self, scopes: tuple[str, ...]) -> BearerToken:
        return self._tokens.token(scopes)

    def authorization(self, scopes: tuple[str, ...]) -> str | None:
        """The header value for a request needing `scopes` (may fetch a token), or None."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "bearer":
            return "Bearer " + self._tokens.token(scopes).value
        if challenge.scheme == "basic" and self.credentials is not None:
            return self.credentials.basic_authorization()
        return None

    def retry_after_unauthorized(self, scopes: tuple[str, ...], sent: str | None,
                                 challenges: list[Challenge]) -> bool:
        """After a 401 to a request that carried `sent`: prepare a better header and say whether
        to try once more. A Bearer challenge may name more scopes than asked: they are added.
        Harbor answers a refused token with `Basic realm="harbor"`: the token is fetched again."""
        chosen = pick_challenge(challenges)
        if chosen is None:
            return False
        sent_scheme, _, sent_value = (sent or "").partition(" ")
        sent_scheme = sent_scheme.lower()
        if chosen.scheme == "bearer":
            with self._lock:
                self._challenge = chosen
            self._tokens.renew(scopes, sent_value if sent_scheme == "bearer" else None, chosen.scopes)
            return True
        if sent_scheme == "bearer":
            self._tokens.renew(scopes, sent_value)
            return True
        if not sent and self.credentials is not None:
            self.learn(chosen)
            return True
        return False
