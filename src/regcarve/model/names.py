"""The reference grammar of distribution/reference: repository names, tags, registry hosts, digests."""

from __future__ import annotations

import re

SHA256_HEX = re.compile(r"[a-f0-9]{64}")
DIGEST = re.compile(r"sha256:([a-f0-9]{64})")

PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_COMPONENT = re.compile(PATH_COMPONENT)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])"
_REGISTRY_PREFIX = re.compile(rf"(?P<host>{_HOST}(?::[0-9]+)?)(?P<path>(?:/{PATH_COMPONENT})*)")
REPOSITORY_NAME_MAX = 255


def hex_of(digest: str) -> str:
    """The hex part of `sha256:<hex>`: how files named by digest are named."""
    return digest.removeprefix("sha256:")


def repository_name_problem(name: str) -> str | None:
    """Why `name` is not a valid repository name, or None when it is."""
    if not name:
        return "empty repository name"
    if len(name) > REPOSITORY_NAME_MAX:
        return f"repository name longer than {REPOSITORY_NAME_MAX} characters"
    for component in name.split("/"):
        if component in ("", ".", ".."):
            return f"repository name has an empty, '.' or '..' component: {name!r}"
        if not _PATH_COMPONENT.fullmatch(component):
            return f"invalid repository name component {component!r} in {name!r}"
    return None


def project_problem(project: str) -> str | None:
    """Why `project` cannot hold single-component repositories (Harbor's projects are one component)."""
    if "/" in project:
        return f"{project!r}: a project is one name component"
    return repository_name_problem(project)


def in_project(repository: str, project: str) -> str:
    """`repository` as it lands with single-component names put into `project` (none: unchanged)."""
    return f"{project}/{repository}" if project and "/" not in repository else repository


def tag_problem(tag: str) -> str | None:
    """Why `tag` is not a valid tag, or None when it is."""
    if not _TAG.fullmatch(tag):
        return f"invalid tag {tag!r}"
    return None


def split_registry_prefix(text: str) -> tuple[str, str]:
    """`HOST[:PORT][/PATH…]` → (host[:port], path without leading '/'); ValueError when it is not that."""
    m = _REGISTRY_PREFIX.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not HOST[:PORT][/PATH] (path components are lowercase [a-z0-9._-])")
    return m["host"], m["path"].removeprefix("/")


def looks_like_registry_host(host: str) -> bool:
    """Docker's rule: the first component names a registry only with a '.', a ':port', or as localhost."""
    return "." in host or ":" in host or host == "localhost"


def normalized_name(name: str) -> str:
    """A reference's name as Docker, containerd and containers/image read it: HOST/PATH, where a first
    component that is no registry host means docker.io, and a one-component path there is under library/."""
    first, sep, rest = name.partition("/")
    host, path = (first, rest) if sep and looks_like_registry_host(first) else ("docker.io", name)
    if host == "index.docker.io":
        host = "docker.io"
    if host == "docker.io" and "/" not in path:
        path = "library/" + path
    return f"{host}/{path}"
