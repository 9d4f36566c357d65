"""What every sink is: it receives images to emit and verified blobs to read, and says what it can hold.

A sink never sees the input, the inventory or where the blobs are kept. It declares its
Capabilities; `run` decides from them, once for every sink, which images it is not given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

from regcarve.model.manifests import Platform
from regcarve.plan.output import ImageFailed, ImageOut, ImageSkipped

__all__ = ["SKOPEO_NESTED_INDEX", "Capabilities", "ImageFailed", "ImageOut", "ImageSkipped", "OptionError",
           "Options", "Refusal", "Result", "Sink", "Status"]

SKOPEO_NESTED_INDEX = ("nested index (an index inside an index): skopeo cannot copy it "
                       "(containers/image#2076); choose one instance with --platform")


class Status(Enum):
    WRITTEN = "written"  # into a folder or file
    PUSHED = "pushed"  # into a registry
    PRESENT = "present"  # the registry holds it with this digest already: nothing was sent
    PLANNED = "planned"  # --dry-run: would be pushed
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        """The image is where it should be."""
        return self in (Status.WRITTEN, Status.PUSHED, Status.PRESENT)


class Refusal(Enum):
    """Shapes of image a sink may be unable to hold."""

    SCHEMA1 = "schema1"
    INDEX = "index"
    ARTIFACT = "artifact"  # its reason may name what the artifact is: "{what}"
    NESTED_INDEX = "nested-index"


@dataclass(frozen=True)
class Capabilities:
    refuses: dict[Refusal, str] = field(default_factory=dict)  # what it cannot hold → the reason an image is skipped
    index_platforms: tuple[Platform, ...] = ()  # it holds one platform per tag: what an index gives without --platform
    keeps_store_links: bool = True  # its output hardlinks the store's files, so the store stays (it costs no blocks)
    attachments_refused: str = ""  # it cannot hold signatures, SBOMs, referrers indexes: why (said once)
    finds_expected_blobs: bool = False  # its destination may hold blobs a delta volume expects: it looks for them


@dataclass(slots=True)
class Result:
    ref: str
    status: Status
    reason: str = ""
    path: str = ""  # where the image went: relative to OUT
    digest: str = ""
    media_type: str = ""  # of what is written (schema1: signed)
    stored_media_type: str = ""  # the storage's own, when another
    source_digest: str = ""  # a schema1 image converted to schema2: the digest the tag names in the source

    def to_json(self) -> dict:
        out = {
            "ref": self.ref,
            "status": self.status.value,
            "reason": self.reason,
            "path": self.path,
            "digest": self.digest,
            "media_type": self.media_type,
        }
        if self.stored_media_type and self.stored_media_type != self.media_type:
            out["stored_media_type"] = self.stored_media_type
        if self.source_digest:
            out["source_digest"] = self.source_digest
        return out


@dataclass(frozen=True)
class Options:
    """The command line's options for sinks; each sink reads those it has."""

    force: bool = False
    repo_prefix: str = ""
    keep_compressed: bool = False
    oci_layout: str = "per-tag"
    single_file: Path | None = None


class OptionError(ValueError):
    """An option a sink cannot work with, said before the input is read."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


class Sink(Protocol):
    format: str
    capabilities: Capabilities
    notes: list[str]  # said once in the summary

    # optional: @classmethod check_options(cls, options: Options, out: Path) -> Options, raising OptionError

    def relpath(self, repository: str, tag: str) -> str:
        """Where the image goes, for the report."""

    def prepare(self, images: list[ImageOut]) -> None:
        """Called once before the first write, with every image the run will give, in order."""

    def write(self, image: ImageOut) -> None:
        """Emit one image. Raise ImageFailed (or ImageSkipped) with the reason."""

    # optional, for a sink that emits images concurrently: write_all(images) yields (image, Status or the
    # ImageFailed/ImageSkipped it ended with) as each is done, in any order

    def finish(self, results: list[Result]) -> None:
        """Called once after the last write (not after an interrupt)."""

    def hint(self, results: list[Result]) -> list[str]:
        """What to do next with the output (the push command), for the summary."""
