"""The requests a push sends (OCI distribution spec v1.1): what is there, blobs in, manifests in.

Blobs: `POST …/blobs/uploads/?mount=<digest>&from=<repository>` mounts a blob the registry holds
elsewhere (201); a registry that cannot answers 202 with an upload session, and the blob is uploaded
into it with one monolithic `PUT <location>?digest=<digest>`, streamed from its file. A first upload
names its own repository as `from`, which makes the same request a check: a blob an interrupted run
left there is mounted in place (201) instead of sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote

from regcarve.blobs.files import BlobUnavailable
from regcarve.blobs.source import BlobSource
from regcarve.model.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
)
from regcarve.plan.output import ManifestOut
from regcarve.sinks.registry import RegistryError, RegistryRefused
from regcarve.sinks.registry.transport import RetryPolicy, Transport, add_query

ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1])
TAGS_PAGE = 1000
COMMIT_RATE = 20e6  # bytes a second a slow registry still commits an uploaded blob at
# A manifest refused with a 5xx is mostly refused for good (Distribution answers schema1 without
# compatibility, or a foreign layer it does not allow, with 500 UNKNOWN): try once more, not eight times.
MANIFEST_RETRY = RetryPolicy(attempts=3, total_seconds=30.0, first_delay=0.5, max_delay=2.0)


class DigestMismatch(RegistryError):
    """The registry stored something under another digest than the one sent."""


@dataclass(frozen=True)
class BlobBody:
    """A blob streamed from its BlobSource, opened afresh for each attempt."""

    blobs: BlobSource
    digest: str

    def open(self) -> tuple[BinaryIO, int]:
        try:
            return self.blobs.open(self.digest), self.blobs.size(self.digest)
        except BlobUnavailable as e:  # a storage read in place changed under the run: this blob's images fail
            raise RegistryError(f"blob {self.digest}: {e}", host="") from None


class Requests:
    def __init__(self, transport: Transport, blobs: BlobSource):
        self.transport = transport
        self.blobs = blobs

    def existing_tags(self, repo: str, scopes: tuple[str, ...]) -> set[str]:
        """The tags the repository has (none when it does not exist), every page of them."""
        url: str | None = f"/v2/{repo}/tags/list?n={TAGS_PAGE}"
        tags: set[str] = set()
        while url:
            answer = self.transport.request("GET", url, scopes=scopes, expect=(200, 404))
            if answer.status == 404:
                return tags
            tags.update(answer.json().get("tags") or ())
            url = _next_page(answer.headers.get("Link", ""))
        return tags

    def manifest_digest(self, repo: str, reference: str, scopes: tuple[str, ...]) -> str | None:
        answer = self.transport.request("HEAD", f"/v2/{repo}/manifests/{reference}", scopes=scopes,
                                        headers={"Accept": ACCEPT}, expect=(200, 404))
        return answer.headers.get("Docker-Content-Digest") if answer.status == 200 else None

    def has_blob(self, repo: str, digest: str, scopes: tuple[str, ...]) -> bool:
        answer = self.transport.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=scopes, expect=(200, 404))
        return answer.status == 200

    def send_blob(self, repo: str, digest: str, source: str, scopes: tuple[str, ...]) -> bool:
        """Mount `digest` from `source` into `repo`, or upload it when the registry will not: True when
        its bytes were sent."""
        answer = self.transport.request(
            "POST", f"/v2/{repo}/blobs/uploads/?mount={quote(digest)}&from={quote(source)}", scopes=scopes,
            expect=(201, 202))
        if answer.status == 201:
            return False
        url = add_query(answer.location(), {"digest": digest})
        try:
            # a registry may take long to commit a big blob (a copy on object storage): wait in proportion
            done = self.transport.request("PUT", url, scopes=scopes, body=BlobBody(self.blobs, digest),
                                          headers={"Content-Type": "application/octet-stream"}, expect=(201, 204),
                                          read_timeout=60 + self.blobs.size(digest) / COMMIT_RATE)
        except RegistryRefused as e:
            # an attempt lost in transit may have completed the upload, and closed its session
            if e.status == 404 and e.attempts > 1 and self.has_blob(repo, digest, scopes):
                return True
            raise
        _check_digest(self.transport.host, f"blob {digest}", done.headers.get("Docker-Content-Digest"), digest)
        return True

    def mount_blob(self, repo: str, digest: str, source: str, scopes: tuple[str, ...]) -> bool:
        """Mount `digest` from `source` into `repo`, never uploading: True when mounted. A registry that
        answers with an upload session instead (it would not mount) has that session cancelled."""
        answer = self.transport.request(
            "POST", f"/v2/{repo}/blobs/uploads/?mount={quote(digest)}&from={quote(source)}", scopes=scopes,
            expect=(201, 202))
        if answer.status == 201:
            return True
        try:
            self.transport.request("DELETE", answer.location(), scopes=scopes, expect=(200, 202, 204, 404))
        except RegistryRefused:
            pass  # a session left open expires on its own (Distribution purges stale uploads)
        return False

    def put_manifest(self, repo: str, reference: str, manifest: ManifestOut, scopes: tuple[str, ...]) -> None:
        """PUT the exact bytes with their media type; the registry must answer the digest they have."""
        answer = self.transport.request("PUT", f"/v2/{repo}/manifests/{reference}", scopes=scopes,
                                        body=manifest.raw, headers={"Content-Type": manifest.media_type},
                                        expect=(201,), retry=MANIFEST_RETRY)
        _check_digest(self.transport.host, f"{repo}:{reference}", answer.headers.get("Docker-Content-Digest"),
                      manifest.digest)


def _check_digest(host: str, what: str, answered: str | None, sent: str) -> None:
    # A registry that answers no digest cannot be checked here (the spec says it should answer one).
    if answered and answered != sent:
        raise DigestMismatch(f"{host}: {what} was stored as {answered}, not {sent}", host=host)


def _next_page(link: str) -> str | None:
    """The `rel="next"` URL of a Link header (RFC 8288), as registries page tag lists."""
    for part in link.split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            return target.strip().removeprefix("<").removesuffix(">") or None
    return None
