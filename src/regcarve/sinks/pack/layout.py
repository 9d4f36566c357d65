"""What one image puts into a registry storage: its blobs' `data` files and the repository links
a registry needs to serve it (`_layers`, `_manifests/revisions`, `_manifests/tags/<tag>/{current,index}`)."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass

from regcarve.model.names import hex_of
from regcarve.sinks.base import ImageOut

ROOT = "docker/registry/v2"
BLOCK = 512
END_OF_ARCHIVE = 2 * BLOCK


@dataclass(frozen=True, slots=True)
class BlobFile:
    path: str  # member name
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class LinkFile:
    path: str
    target: str  # the digest the link names

    @property
    def data(self) -> bytes:
        return self.target.encode()


def blob_path(digest: str) -> str:
    hexd = hex_of(digest)
    return f"{ROOT}/blobs/sha256/{hexd[:2]}/{hexd}/data"


def manifest_digests(image: ImageOut) -> list[str]:
    """The stored manifests the image needs: the tag's and every child (as stored: schema1 unsigned)."""
    return [image.manifest.digest, *(m.digest for m in image.children)]


def blob_digests(image: ImageOut) -> list[str]:
    """Configs and layers whose bytes the storage must hold (foreign layers the source lacks are not)."""
    return [d.digest for d in image.blobs]


def links(image: ImageOut) -> list[LinkFile]:
    repo = f"{ROOT}/repositories/{image.repository}"
    tag = image.manifest.digest
    out = [LinkFile(f"{repo}/_layers/sha256/{hex_of(d)}/link", d) for d in blob_digests(image)]
    out += [LinkFile(f"{repo}/_manifests/revisions/sha256/{hex_of(d)}/link", d) for d in manifest_digests(image)]
    out.append(LinkFile(f"{repo}/_manifests/tags/{image.tag}/index/sha256/{hex_of(tag)}/link", tag))
    out.append(LinkFile(f"{repo}/_manifests/tags/{image.tag}/current/link", tag))
    return out


def header(name: str, size: int) -> bytes:
    """The header block(s) of one regular file: GNU format, for names over 100 characters and sizes from
    8 GiB on (a long name takes a `././@LongLink` entry, which regcarve, GNU tar and Python read)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uname = info.gname = ""
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")


def padded(size: int) -> int:
    return -size % BLOCK


def entry_bytes(name: str, size: int) -> int:
    """What a regular file takes in a tar: header(s), data, padding."""
    return len(header(name, size)) + size + padded(size)
