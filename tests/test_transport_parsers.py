"""Parsers of the registry transport: WWW-Authenticate challenges, token answers, --creds,
--password-stdin, auth files and their lookup, docker credential helpers."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import string
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from regcarve.sinks.registry.auth import (Challenge, TokenCache, parse_challenges, pick_challenge,
                                          token_from_response)
from regcarve.sinks.registry.credentials import (Credentials, CredentialsError, default_auth_files,
                                                 find_credentials, parse_auth_file, parse_creds, read_password_line,
                                                 registry_key, resolve_credentials)

TCHAR = string.ascii_letters + string.digits + "!#$%&'*+.^_`|~-"
tokens = st.text(TCHAR, min_size=1, max_size=12)
# quoted-string content: any visible text, spaces, commas, quotes and backslashes (escaped when rendered)
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e) | st.sampled_from("\t\u00e9"), max_size=30)
blank = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def challenges(draw) -> tuple[str, Challenge]:
    """A challenge rendered with random spacing, quoting tokens or not; and what it should parse to."""
    scheme = draw(tokens)
    names = draw(st.lists(tokens.map(str.lower), unique=True, max_size=4))
    params = {name: draw(values) for name in names}
    rendered = []
    for name, value in params.items():
        as_token = value and all(c in TCHAR for c in value) and draw(st.booleans())
        shown = value if as_token else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        rendered.append(f"{draw(st.sampled_from([name, name.upper()]))}{draw(blank)}={draw(blank)}{shown}")
    separator = "," + draw(blank)
    text = f"{scheme} {separator.join(rendered)}" if rendered else scheme
    return text, Challenge(scheme.lower(), params)


@given(st.lists(challenges(), min_size=1, max_size=4), blank)
def test_challenges_roundtrip(parts, space):
    header = ("," + space).join(text for text, _ in parts)
    assert parse_challenges(header) == [expected for _, expected in parts]


@given(st.lists(challenges(), min_size=1, max_size=3))
def test_challenges_from_several_headers(parts):
    assert parse_challenges([text for text, _ in parts]) == [expected for _, expected in parts]


def test_challenge_examples():
    harbor = 'Bearer realm="https://h.example/service/token",service="harbor-registry",' \
             'scope="repository:lib/a:pull,push repository:lib/b:pull"'
    [bearer] = parse_challenges(harbor)
    assert bearer.realm == "https://h.example/service/token" and bearer.service == "harbor-registry"
    assert bearer.scopes == ("repository:lib/a:pull,push", "repository:lib/b:pull")
    both = parse_challenges('Negotiate YIIabc==, Basic realm="a, \\"b\\"", Bearer realm=r,error=invalid_token')
    assert [c.scheme for c in both] == ["negotiate", "basic", "bearer"]
    assert both[0].token68 == "YIIabc==" and both[1].realm == 'a, "b"'
    assert both[2].params == {"realm": "r", "error": "invalid_token"}
    assert pick_challenge(both) is both[2] and pick_challenge(both[:2]) is both[1]
    assert pick_challenge(parse_challenges("Negotiate")) is None
    assert parse_challenges("") == [] and parse_challenges('Basic realm="unterminated') == [Challenge("basic")]


def test_token_answer_fields_and_lifetime():
    token = token_from_response(b'{"access_token": "abc", "expires_in": 300}', ("s",), 1000.0)
    assert (token.value, token.expires_at, token.refresh_at) == ("abc", 1300.0, 1270.0)
    token = token_from_response(b'{"token": "t", "access_token": "o"}', (), 0.0)
    assert (token.value, token.expires_at, token.refresh_at) == ("t", 60.0, 54.0)  # default 60 s
    assert token_from_response(b'{"token": "t", "expires_in": 2}', (), 0.0).refresh_at == pytest.approx(1.8)
    for bad in (b"<html>", b"[]", b'{"token": ""}', b'{"expires_in": 5}'):
        with pytest.raises(ValueError):
            token_from_response(bad, (), 0.0)
    assert "t0k3n" not in repr(token_from_response(b'{"token": "t0k3n"}', ("s",), 0.0))


def test_token_cache_fetches_once_per_scope_set_under_concurrency():
    fetched: list[tuple[str, ...]] = []
    lock = threading.Lock()

    def fetch(scopes):
        time.sleep(0.05)
        with lock:
            fetched.append(scopes)
        return token_from_response(json.dumps({"token": f"t{len(fetched)}"}).encode(), scopes, time.monotonic())

    cache = TokenCache(fetch)
    sets = [("repository:a:pull",), ("repository:b:pull,push", "repository:a:pull"),
            ("repository:a:pull", "repository:b:pull,push")]  # the last two are one set
    threads = [threading.Thread(target=cache.token, args=(sets[i % 3],)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(frozenset, fetched), key=sorted) == sorted(map(frozenset, sets[:2]), key=sorted)
    # a refused token is replaced once; the scopes a challenge adds are asked first
    stale = cache.token(sets[0]).value
    cache.renew(sets[0], stale, ("repository:a:pull,push",))
    assert fetched[-1] == ("repository:a:pull,push", "repository:a:pull")
    cache.renew(sets[0], stale)  # another thread already replaced it
    assert len(fetched) == 3


# --- credentials -------------------------------------------------------------------------------

users = st.text(st.characters(blacklist_characters=":\n\r", blacklist_categories=("Cs",)), min_size=1, max_size=20)
passwords = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=30)


@given(users, passwords)
def test_creds_option(user, password):
    assert parse_creds(f"{user}:{password}") == (user, password)
    assert parse_creds(user) == (user, None)


def test_creds_option_needs_a_user():
    for bad in ("", ":secret"):
        with pytest.raises(CredentialsError, match="user name"):
            parse_creds(bad)


@given(passwords.filter(bool), st.sampled_from(["\n", "\r\n", ""]), passwords)
def test_password_stdin_reads_one_line(password, ending, rest):
    assert read_password_line(io.StringIO(password + ending + ("\n" + rest if ending else ""))) == password


def test_password_stdin_empty_is_an_error():
    with pytest.raises(CredentialsError, match="no password"):
        read_password_line(io.StringIO("\n"))


hosts = st.builds(lambda name, port: name + (f":{port}" if port else ""),
                  st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,2}", fullmatch=True),
                  st.none() | st.integers(1, 65535))


@given(st.dictionaries(hosts, st.tuples(users, passwords, st.sampled_from(["auth", "fields"]),
                                        st.sampled_from(["{}", "https://{}", "http://{}/v1/", "https://{}/"])),
                       max_size=4))
def test_auth_file_roundtrip(entries):
    auths = {}
    for host, (user, password, form, key) in entries.items():
        entry = ({"auth": base64.b64encode(f"{user}:{password}".encode()).decode()} if form == "auth"
                 else {"username": user, "password": password})
        auths[key.format(host.upper())] = entry
    parsed = parse_auth_file(json.dumps({"auths": auths}), "auth.json")
    for host, (user, password, _, _) in entries.items():
        assert parsed.entry(host).credentials == Credentials(user, password)
    assert parsed.entry("absent.example:1") is None


def test_registry_key_forms():
    assert registry_key("https://Harbor.Example:8443/") == "harbor.example:8443"
    assert registry_key("http://harbor.example/v1/") == "harbor.example"
    assert registry_key("harbor.example/project") == "harbor.example"


@pytest.mark.parametrize("text, message", [
    ("{", "auth.json: not JSON"), ("[]", "not a JSON object"), ('{"auths": []}', "must be objects"),
    ('{"auths": {"h": {"auth": "%%%"}}}', "'h' is not base64"), ('{"auths": {"h": 1}}', "'h' is not an object"),
])
def test_auth_file_errors(text, message):
    with pytest.raises(CredentialsError, match=message):
        parse_auth_file(text, "auth.json")


def write_auths(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def basic_entry(user: str, password: str) -> dict:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_lookup_order_first_file_knowing_the_host_wins(tmp_path):
    home = tmp_path / "home"
    env = {"REGISTRY_AUTH_FILE": str(tmp_path / "explicit.json"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    assert default_auth_files(env, home) == [tmp_path / "explicit.json", tmp_path / "run/containers/auth.json",
                                             home / ".config/containers/auth.json", home / ".docker/config.json"]
    write_auths(home / ".docker/config.json", {"auths": {"https://a.example": basic_entry("docker", "1"),
                                                         "b.example:5000": basic_entry("docker", "2")}})
    write_auths(tmp_path / "run/containers/auth.json", {"auths": {"a.example": basic_entry("podman", "3")}})
    assert find_credentials("a.example", env=env, home=home) == Credentials("podman", "3")
    assert find_credentials("b.example:5000", env=env, home=home) == Credentials("docker", "2")
    assert find_credentials("b.example", env=env, home=home) is None  # the port is part of the key
    assert find_credentials("a.example", tmp_path / "run/containers/auth.json") == Credentials("podman", "3")
    with pytest.raises(CredentialsError, match="does not exist"):
        find_credentials("a.example", tmp_path / "nope.json")


def fake_helper(folder: Path, name: str, script: str) -> None:
    path = folder / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_credential_helpers(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    fake_helper(bin_dir, "store", 'read h; printf \'{"ServerURL":"%s","Username":"u-%s","Secret":"pw"}\' "$h" "$h"\n')
    fake_helper(bin_dir, "empty", 'echo "credentials not found in native keychain"; exit 1\n')
    config = write_auths(tmp_path / "config.json", {"credsStore": "store", "credHelpers": {"c.example": "empty"},
                                                    "auths": {"a.example": basic_entry("file", "x"),
                                                              "b.example": {}}})
    assert find_credentials("a.example", config) == Credentials("file", "x")  # a file entry beats the store
    assert find_credentials("b.example", config) == Credentials("u-b.example", "pw")
    assert find_credentials("c.example", config) is None
    write_auths(config, {"credsStore": "desktop"})
    with pytest.raises(CredentialsError, match="docker-credential-desktop, which is not installed; give --creds"):
        find_credentials("b.example", config)
    write_auths(config, {"auths": {"d.example": {"identitytoken": "opaque"}}})
    with pytest.raises(CredentialsError, match="identity token for d.example"):
        find_credentials("d.example", config)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_resolve_credentials_choices(tmp_path):
    nothing = {"HOME": str(tmp_path)}
    asked = []
    prompt = lambda text: asked.append(text) or "typed"  # noqa: E731
    assert resolve_credentials("h", creds="u:p", env=nothing) == Credentials("u", "p")
    assert resolve_credentials("h", creds="u", stdin=Terminal(), prompt=prompt, env=nothing) == Credentials("u", "typed")
    assert asked == ["Password for u at h: "]
    assert resolve_credentials("h", creds="u", password_stdin=True, stdin=io.StringIO("piped\n")) == \
        Credentials("u", "piped")
    assert resolve_credentials("h", env=nothing, home=tmp_path) is None
    with pytest.raises(CredentialsError, match="not a terminal"):
        resolve_credentials("h", creds="u", stdin=io.StringIO(""))
    with pytest.raises(CredentialsError, match="both give a password"):
        resolve_credentials("h", creds="u:p", password_stdin=True, stdin=io.StringIO("x\n"))
    with pytest.raises(CredentialsError, match="needs the user name"):
        resolve_credentials("h", password_stdin=True, stdin=io.StringIO("x\n"))


@settings(max_examples=50)
@given(users, passwords)
def test_credentials_never_show_the_password(user, password):
    creds = Credentials(user, "S3cr3t-" + password)
    for shown in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "S3cr3t-" not in shown and "<redacted>" in shown
