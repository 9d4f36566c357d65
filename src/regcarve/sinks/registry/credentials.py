"""Where registry credentials come from: `--creds USER[:PASS]`, `--password-stdin`, a prompt,
or an auth file in the docker/containers format (with docker credential helpers).

Auth file lookup without an explicit file, as skopeo/podman do (containers/image pkg/docker/config):
$REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, $XDG_CONFIG_HOME/containers/auth.json
(~/.config), then docker's $DOCKER_CONFIG/config.json (~/.docker). The first file that knows the
host wins. Identity tokens (OAuth refresh tokens written by some `docker login`s) are not supported.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

HELPER_TIMEOUT = 30.0  # seconds a docker-credential-* helper may take (it may ask a keyring)
HINT = "give --creds USER[:PASS] or --password-stdin instead"


class CredentialsError(Exception):
    """Credentials could not be obtained; the message is one line without any secret."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password. Neither repr nor str shows the password."""
    username: str
    password: str = field(repr=False)

    def basic_authorization(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<redacted>)"

    __str__ = __repr__


# --- --creds and --password-stdin ------------------------------------------------------------

def parse_creds(value: str) -> tuple[str, str | None]:
    """`USER[:PASS]` → (user, password or None when no colon). The password may hold colons;
    `USER:` is an empty password, given on purpose."""
    user, colon, password = value.partition(":")
    if not user:
        raise CredentialsError("--creds needs a user name: USER[:PASS]")
    return user, password if colon else None


def read_password_line(stream: TextIO) -> str:
    """One line from `stream` (--password-stdin), without its line ending."""
    line = stream.readline()
    password = line[:-1] if line.endswith("\n") else line
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise CredentialsError("--password-stdin: no password on standard input")
    return password


# --- auth files --------------------------------------------------------------------------------

def registry_key(key: str) -> str:
    """An auths key as docker and podman write it (`host:port`, `https://host/`, `http://host/v1/`,
    `host/namespace`) reduced to the registry `host[:port]`, lower-case."""
    for prefix in ("https://", "http://"):
        if key.lower().startswith(prefix):
            key = key[len(prefix):]
            break
    return key.split("/", 1)[0].lower()


@dataclass(frozen=True)
class AuthEntry:
    """What one auths entry holds; `helper` names a docker-credential-* program to ask instead."""
    credentials: Credentials | None = None
    identity_token: bool = False
    helper: str | None = None


@dataclass(frozen=True)
class AuthFile:
    source: str
    entries: Mapping[str, AuthEntry]
    creds_store: str | None = None

    def entry(self, host: str) -> AuthEntry | None:
        """The entry for `host` (`host[:port]`): credHelpers, then auths, then credsStore."""
        found = self.entries.get(host.lower())
        if found is not None and (found.helper or found.credentials or found.identity_token):
            return found
        if self.creds_store:
            return AuthEntry(helper=self.creds_store)
        return found


def _decode_entry(key: str, value: object, source: str) -> AuthEntry:
    if not isinstance(value, dict):
        raise CredentialsError(f"{source}: auths entry {key!r} is not an object")
    user, password = value.get("username"), value.get("password")
    if isinstance(value.get("auth"), str) and value["auth"]:
        try:
            user, _, password = base64.b64decode(value["auth"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsError(f"{source}: the auth of {key!r} is not base64 of USER:PASS") from None
    if isinstance(user, str) and user and isinstance(password, str):
        return AuthEntry(Credentials(user, password))
    return AuthEntry(identity_token=bool(value.get("identitytoken")))


def parse_auth_file(text: str, source: str) -> AuthFile:
    """An auth file's `auths`, `credHelpers` and `credsStore`. `source` names it in errors."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise CredentialsError(f"{source}: not JSON") from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"{source}: not a JSON object")
    auths = {} if doc.get("auths") is None else doc["auths"]
    helpers = {} if doc.get("credHelpers") is None else doc["credHelpers"]
    if not isinstance(auths, dict) or not isinstance(helpers, dict):
        raise CredentialsError(f"{source}: auths and credHelpers must be objects")
    entries = {registry_key(k): _decode_entry(k, v, source) for k, v in auths.items()}
    for key, helper in helpers.items():
        if isinstance(helper, str) and helper:
            entries[registry_key(key)] = AuthEntry(helper=helper)
    store = doc.get("credsStore")
    return AuthFile(source, entries, store if isinstance(store, str) and store else None)


def default_auth_files(env: Mapping[str, str], home: Path) -> list[Path]:
    """The auth files looked at, in order, when none is named."""
    paths = []
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    paths.append(Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "containers" / "auth.json")
    paths.append(Path(env.get("DOCKER_CONFIG") or home / ".docker") / "config.json")
    return paths


def run_credential_helper(helper: str, host: str, source: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get` for `host` (docker's helper protocol: the server on
    stdin, {"Username", "Secret"} on stdout); None when the helper has nothing for it."""
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise CredentialsError(f"{source} keeps the credentials of {host} in docker-credential-{helper}, "
                               f"which is not installed; {HINT}")
    try:
        done = subprocess.run([program, "get"], input=host, capture_output=True, text=True,
                              timeout=HELPER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"docker-credential-{helper} gave no answer for {host} within "
                               f"{HELPER_TIMEOUT:.0f} s; {HINT}") from None
    if done.returncode != 0:
        if "not found" in done.stdout.lower() + done.stderr.lower():
            return None
        raise CredentialsError(f"docker-credential-{helper} failed for {host} (exit {done.returncode}); {HINT}")
    try:
        answer = json.loads(done.stdout)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"docker-credential-{helper} gave an unreadable answer for {host}") from None
    if user == "<token>":
        raise CredentialsError(f"docker-credential-{helper} holds an identity token for {host}, "
                               f"which regcarve does not support; {HINT}")
    return Credentials(user, secret)


def credentials_from_file(path: Path, host: str) -> Credentials | None:
    """The credentials `path` holds for `host`, or None when it holds none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CredentialsError(f"cannot read auth file {path}: {e.strerror}") from None
    entry = parse_auth_file(text, str(path)).entry(host)
    if entry is None:
        return None
    if entry.helper:
        return run_credential_helper(entry.helper, host, str(path))
    if entry.credentials is None and entry.identity_token:
        raise CredentialsError(f"{path} holds an identity token for {host}, which regcarve does not "
                               f"support; {HINT}")
    return entry.credentials


def find_credentials(host: str, auth_file: Path | None = None, *, env: Mapping[str, str] | None = None,
                     home: Path | None = None) -> Credentials | None:
    """Credentials for `host` from `auth_file`, or from the first default auth file that has some."""
    if auth_file is not None:
        if not auth_file.is_file():
            raise CredentialsError(f"auth file {auth_file} does not exist")
        return credentials_from_file(auth_file, host)
    env = os.environ if env is None else env
    for path in default_auth_files(env, home or Path.home()):
        if path.is_file():
            found = credentials_from_file(path, host)
            if found is not None:
                return found
    return None


# --- the command line's choice -------------------------------------------------------------

def resolve_credentials(host: str, *, creds: str | None = None, password_stdin: bool = False,
                        auth_file: Path | None = None, stdin: TextIO | None = None,
                        prompt: Callable[[str], str] = getpass.getpass,
                        env: Mapping[str, str] | None = None, home: Path | None = None) -> Credentials | None:
    """The credentials a push to `host` uses: `--creds` (with `--password-stdin` or a prompt
    for the password when it is missing), else an auth file; None means anonymous."""
    stdin = sys.stdin if stdin is None else stdin
    if creds is None:
        if password_stdin:
            raise CredentialsError("--password-stdin needs the user name: --creds USER")
        return find_credentials(host, auth_file, env=env, home=home)
    user, password = parse_creds(creds)
    if password_stdin:
        if password is not None:
            raise CredentialsError("--creds USER:PASS and --password-stdin both give a password")
        return Credentials(user, read_password_line(stdin))
    if password is None:
        if not stdin.isatty():
            raise CredentialsError(f"--creds {user} has no password and standard input is not a "
                                   "terminal to ask for it: use --creds USER:PASS or --password-stdin")
        password = prompt(f"Password for {user} at {host}: ")
    return Credentials(user, password)
