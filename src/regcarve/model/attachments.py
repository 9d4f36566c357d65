"""What is attached to an image: signatures, attestations, SBOMs and other artifacts, and the links that tie them.

Three links are known, as registries without the referrers API hold them:
- a manifest's `subject` (OCI 1.1), wherever the manifest is stored (a tag, an index child, by digest only);
- a cosign tag `sha256-<hex>.sig|.att|.sbom` in the repository of the manifest `sha256:<hex>`;
- a referrers fallback index tagged `sha256-<hex>` (the OCI referrers tag schema), which lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from regcarve.model.manifests import ParsedManifest

_LINK_TAG = re.compile(r"sha256-([0-9a-f]{64})(?:\.(sig|att|sbom))?")


class AttachmentKind(Enum):
    SIGNATURE = "signature"
    ATTESTATION = "attestation"
    SBOM = "sbom"
    REFERRERS = "referrers-index"  # the fallback index listing the referrers
    OTHER = "other"  # another artifactType

    def label(self, n: int = 1) -> str:
        """`n signatures`, `1 SBOM`, `2 referrers indexes`: how a line of text says it."""
        one, many = _LABELS[self]
        return f"{n} {one if n == 1 else many}"


_LABELS = {AttachmentKind.SIGNATURE: ("signature", "signatures"),
           AttachmentKind.ATTESTATION: ("attestation", "attestations"), AttachmentKind.SBOM: ("SBOM", "SBOMs"),
           AttachmentKind.REFERRERS: ("referrers index", "referrers indexes"),
           AttachmentKind.OTHER: ("other artifact", "other artifacts")}


class Via(Enum):
    SUBJECT = "subject"
    COSIGN_TAG = "cosign-tag"
    REFERRERS_TAG = "referrers-tag"


_SUFFIX_KINDS = {"sig": AttachmentKind.SIGNATURE, "att": AttachmentKind.ATTESTATION, "sbom": AttachmentKind.SBOM}
# words in an artifactType, config or layer media type that say what an artifact is, the first found wins
_TYPE_WORDS = (
    (("cosign.simplesigning", "cosign.artifact.sig", "notary.signature", "notation"), AttachmentKind.SIGNATURE),
    (("dsse.envelope", "in-toto", "intoto"), AttachmentKind.ATTESTATION),
    (("spdx", "cyclonedx", "syft", "sbom"), AttachmentKind.SBOM),
)


@dataclass(frozen=True, slots=True)
class TagLink:
    """What a tag's name says it is attached to."""

    subject: str  # sha256:<hex>
    kind: AttachmentKind | None  # None: a referrers index (known once its manifest is an index)


def tag_link(tag: str | None) -> TagLink | None:
    match = _LINK_TAG.fullmatch(tag or "")
    if match is None:
        return None
    hexdigest, suffix = match.groups()
    return TagLink("sha256:" + hexdigest, _SUFFIX_KINDS[suffix] if suffix else None)


def kind_of(parsed: ParsedManifest) -> AttachmentKind:
    """What an attached manifest is, from its artifactType, config and layer media types."""
    types = [parsed.artifact_type, parsed.config.media_type if parsed.config else ""]
    types += [d.media_type for d in parsed.layers] + [d.artifact_type for d in parsed.manifests]
    text = " ".join(types).lower()
    for words, kind in _TYPE_WORDS:
        if any(w in text for w in words):
            return kind
    return AttachmentKind.OTHER


@dataclass(frozen=True, slots=True)
class Attachment:
    """One manifest attached to another of the same repository."""

    repository: str
    digest: str  # the attached manifest
    subject: str  # the manifest it is about
    kind: AttachmentKind
    via: Via
    carried_by: str  # the repo:tag whose output holds it (its own tag, or the index listing it)
    artifact_type: str = ""

    def to_json(self) -> dict:
        out = {"digest": self.digest, "subject": self.subject, "kind": self.kind.value, "via": self.via.value,
               "carried_by": self.carried_by}
        if self.artifact_type:
            out["artifact_type"] = self.artifact_type
        return out


def counts(attachments: list[Attachment]) -> dict[str, int]:
    """How many of each kind (each attached manifest once), in the order of AttachmentKind."""
    kinds = {a.digest: a.kind for a in attachments}
    return {k.value: n for k in AttachmentKind if (n := sum(1 for v in kinds.values() if v is k))}


def counts_text(attachments: list[Attachment]) -> str:
    """`1 signature, 1 attestation, 1 SBOM` — for a line of text."""
    return ", ".join(AttachmentKind(k).label(n) for k, n in counts(attachments).items())
