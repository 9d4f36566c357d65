"""A run: source → catalog → the selected images, as they go out → a sink; then the store is pruned.

Which images a sink is not given is decided here, once for every sink, from what the sink declares
it can hold (its Capabilities); the sink only says why an image it was given failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from regcarve.blobs.files import BlobUnavailable
from regcarve.blobs.made import MadeBlobs
from regcarve.blobs.store import BlobStore
from regcarve.model.attachments import counts_text
from regcarve.model.catalog import Catalog, Image, ImageKind, ManifestNode, resolve
from regcarve.model.expected import EXPECTED_BLOB
from regcarve.model.manifests import DOCKER_MANIFEST, Platform, artifact_what, written_media_type
from regcarve.model.names import in_project
from regcarve.model.problems import Problem
from regcarve.plan.schema1 import SKIPPED as SCHEMA1_SKIPPED
from regcarve.plan.schema1 import Schema1Converter, Schema1Mode
from regcarve.plan.select import Chosen, Job, plan_job, select_with_attachments
from regcarve.plan.transform import Body, emit
from regcarve.sinks.base import Capabilities, ImageFailed, ImageOut, ImageSkipped, Refusal, Result, Sink, Status
from regcarve.sources.base import Progress, StorageSource
from regcarve.sources.delivery import Receiving

_KIND_REFUSALS = {ImageKind.SCHEMA1: Refusal.SCHEMA1, ImageKind.INDEX: Refusal.INDEX,
                  ImageKind.ARTIFACT: Refusal.ARTIFACT}


@dataclass
class Selection:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    platforms: list[Platform] = field(default_factory=list)
    default_project: str = ""  # where single-component repositories go out (`app` → `library/app`)
    schema1: Schema1Mode | None = None  # None: the sink's default (convert where it cannot hold schema1)
    attachments: bool = True  # what is attached to a selected image (signatures, SBOMs, …) goes with it

    def schema1_mode(self, capabilities: Capabilities) -> Schema1Mode:
        if self.schema1 is not None:
            return self.schema1
        return Schema1Mode.CONVERT if Refusal.SCHEMA1 in capabilities.refuses else Schema1Mode.KEEP


@dataclass
class Outcome:
    results: list[Result]
    catalog: Catalog
    seconds: float
    notes: list[str]
    hint: list[str]
    unique_bytes: int = 0  # the distinct blobs behind the images emitted, each counted once
    reused_blobs: int = 0  # verified store files an earlier run left, used instead of written again

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)


def read_catalog(source: StorageSource, store: BlobStore | None, progress: Progress | None = None,
                 receiving: Receiving | None = None) -> Catalog:
    """The one read of the input, resolved into images; for a delta volume (`receiving`), with the blobs it
    expects from earlier deliveries taken from earlier OUTs where given, and the others known as expected."""
    inv = source.read(store, progress)
    if receiving is None:
        return resolve(inv)
    receiving.complete(inv, store)
    return resolve(inv, receiving.expected.delivery)


def refusal(job: Job, capabilities: Capabilities, converting_schema1: bool = False) -> str | None:
    """Why a sink with these capabilities cannot hold the job's image, if it cannot (a schema1 image it is
    given converted, it can)."""
    refuses, root = capabilities.refuses, job.root
    kind = _KIND_REFUSALS.get(root.kind)
    if kind is Refusal.SCHEMA1 and converting_schema1:
        kind = None
    if kind in refuses:
        return refuses[kind].format(what=artifact_what(root.parsed)) if kind is Refusal.ARTIFACT else refuses[kind]
    if Refusal.NESTED_INDEX in refuses and any(n.kind is ImageKind.INDEX for n in job.nodes if n is not root):
        return refuses[Refusal.NESTED_INDEX]
    return None


def _reason(image: Image, problems: list[Problem]) -> str:
    """The problems' messages, without the `repo:tag: ` some start with (the line names the image)."""
    return "; ".join(p.message.removeprefix(f"{image.ref}: ") for p in problems)


class Admission:
    """What a sink is given: `admit` each selected image in catalog order. What is the same for every tag
    naming one manifest (its job's manifests, their errors, whether the sink refuses it, what goes out) is
    found once for all of them: thousands of tags may name one manifest.

    `taken`: the output repository each source repository admitted so far went to; `converter`: set when
    schema1 images are converted; `delivery`: the earlier delivery each expected blob is expected from."""

    def __init__(self, sink: Sink, selection: Selection, blobs: MadeBlobs, taken: dict[str, str],
                 converter: Schema1Converter | None = None, delivery: Mapping[str, str] | None = None):
        self.sink, self.selection, self.blobs, self.taken, self.converter = sink, selection, blobs, taken, converter
        self.delivery = delivery or {}
        self.skip_schema1 = selection.schema1_mode(sink.capabilities) is Schema1Mode.SKIP
        self._planned: dict[ManifestNode, tuple[Job, list[Problem], str | None]] = {}
        self._made: dict[ManifestNode, Body] = {}

    def _plan(self, image: Image) -> tuple[Job, list[Problem], str | None]:
        """The image's job, its errors, and why the sink refuses it (None: it does not)."""
        assert image.root is not None
        known = None if image.problems else self._planned.get(image.root)
        if known is not None:
            job, errors, why = known
            return Job(image, job.root, job.nodes, job.platform_choice), errors, why
        job = plan_job(image, self.selection.platforms, list(self.sink.capabilities.index_platforms))
        is_schema1 = job.root.kind is ImageKind.SCHEMA1
        planned = job, image.errors(job.nodes), refusal(job, self.sink.capabilities,
                                                        is_schema1 and self.converter is not None)
        if not image.problems:
            self._planned[image.root] = planned
        return planned

    def admit(self, image: Image) -> tuple[Result, ImageOut | None]:
        """The image's result so far, and what the sink is given when there is something to emit."""
        result = Result(image.ref, Status.FAILED, digest=image.digest,
                        media_type=written_media_type(image.media_type), stored_media_type=image.media_type)
        if image.root is None:
            result.reason = _reason(image, image.errors()) or "manifest unreadable"
            return result, None
        assert image.tag is not None
        try:
            job, errors, why = self._plan(image)
            result.digest, result.stored_media_type = job.digest, job.media_type
            result.media_type = written_media_type(job.media_type)
            repository = in_project(image.repository, self.selection.default_project)
            result.path = self.sink.relpath(repository, image.tag)
            owner = self.taken.setdefault(repository, image.repository)
            if owner != image.repository:
                raise ImageFailed(f"{image.repository} would go out as {repository}, which {owner} fills already; "
                                  "leave one of them out")
            expected = {p.subject: p for p in errors if p.code == EXPECTED_BLOB}  # absent, an earlier delivery has them
            if self.sink.capabilities.finds_expected_blobs:  # the destination may hold them: the sink looks
                errors = [p for p in errors if p.code != EXPECTED_BLOB]
            if errors:
                raise ImageFailed(_reason(image, errors))
            is_schema1 = job.root.kind is ImageKind.SCHEMA1
            if expected and is_schema1 and self.converter is not None:
                raise ImageFailed(_reason(image, list(expected.values())) + "; --schema1 convert needs its bytes")
            if is_schema1 and self.skip_schema1:
                raise ImageSkipped(SCHEMA1_SKIPPED)
            if why is not None:
                raise ImageSkipped(why)
            out = emit(job, self.blobs, self.converter, {d: self.delivery.get(d, "") for d in expected}, self._made)
            if out.manifest.converted_from:
                result.digest, result.media_type = out.manifest.digest, DOCKER_MANIFEST
                result.source_digest = out.manifest.converted_from
            return result, (out if repository == image.repository else replace(out, repository=repository))
        except ImageSkipped as e:
            result.status, result.reason = Status.SKIPPED, str(e)
        except ImageFailed as e:
            result.reason = str(e)
        return result, None


def _record(result: Result, image: ImageOut, outcome: Status | BaseException, used: set[str]) -> None:
    if isinstance(outcome, ImageSkipped):
        result.status, result.reason = Status.SKIPPED, str(outcome)
    elif isinstance(outcome, ImageFailed):
        result.reason = str(outcome)
    else:
        result.status = outcome
        notes = []
        if image.platform_choice:
            notes.append(f"platform {image.platform_choice} chosen from index {image.source_digest}; "
                         "the tag carries that child")
        if image.manifest.converted_from:
            notes.append(f"schema1 {image.manifest.converted_from} converted to Docker v2 schema2 "
                         f"{image.manifest.digest} (a new digest)")
        result.reason = "; ".join(notes)
        used.update(image.digests())


def _written(sink: Sink, image: ImageOut) -> Status | BaseException:
    try:
        sink.write(image)
    except (ImageFailed, ImageSkipped) as e:
        return e
    except BlobUnavailable as e:  # a storage read in place changed under the run
        return ImageFailed(str(e))
    return Status.WRITTEN


def emit_all(catalog: Catalog, blobs: MadeBlobs, sink: Sink, selection: Selection,
             on_result: Callable[[Result], None] = lambda r: None) -> tuple[list[Result], set[str]]:
    """Every selected image of the catalog through the sink: the results in catalog order (`on_result`
    hears each as it is known), and every stored blob the emitted images use."""
    used: set[str] = set()
    chosen = select_with_attachments(catalog.images, selection.include, selection.exclude, selection.attachments)
    if (line := attachments_line(chosen, sink.capabilities)) is not None:
        sink.notes.append(line)
    refused = sink.capabilities.attachments_refused
    selected = [i for i in chosen.images if not (refused and i.is_attachment)]
    # a repository that keeps its name keeps it; one moved into a project cannot take it over
    taken = {i.repository: i.repository for i in selected
             if in_project(i.repository, selection.default_project) == i.repository}
    converting = selection.schema1_mode(sink.capabilities) is Schema1Mode.CONVERT
    converter = Schema1Converter(blobs) if converting else None
    admission = Admission(sink, selection, blobs, taken, converter, catalog.expected)
    admitted = [admission.admit(image) for image in selected]
    images = [image for _, image in admitted if image is not None]
    sink.prepare(images)
    write_all = getattr(sink, "write_all", None)
    if write_all is None:  # one after the other, in order; each image let go once written
        del images
        for k, (result, image) in enumerate(admitted):
            if image is not None:
                _record(result, image, _written(sink, image), used)
                admitted[k] = (result, None)
            on_result(result)
    else:
        waiting = {id(image): result for result, image in admitted if image is not None}
        for result, image in admitted:
            if image is None:
                on_result(result)
        for image, outcome in write_all(images):
            result = waiting.pop(id(image))
            _record(result, image, outcome, used)
            on_result(result)
    results = [result for result, _ in admitted]
    sink.finish(results)
    return results, used


def attachments_line(chosen: Chosen, capabilities: Capabilities) -> str | None:
    """What the summary says of the attachments: how many went with their images, or were left out and why."""
    if chosen.left_out:
        return f"--no-attachments: {len(chosen.left_out)} attachment tag(s) left out ({tally(chosen.left_out)})"
    if not chosen.attachments:
        return None
    n, kinds = len(chosen.attachments), tally(chosen.attachments)
    if capabilities.attachments_refused:
        return f"{n} attachment tag(s) left out ({kinds}): {capabilities.attachments_refused}"
    return f"{n} attachment tag(s) went with their images ({kinds}); --no-attachments leaves them out"


def tally(images: list[Image]) -> str:
    return counts_text([i.attached_as for i in images if i.attached_as is not None])


def convert(catalog: Catalog, store: BlobStore, blobs: MadeBlobs, sink: Sink, selection: Selection,
            on_result: Callable[[Result], None] | None = None) -> Outcome:
    """Every selected image of the catalog through the sink; the store keeps what the output links."""
    started = time.monotonic()
    results, used = emit_all(catalog, blobs, sink, selection, on_result or (lambda r: None))
    kept = used if sink.capabilities.keeps_store_links else set()
    for digest in store.digests() - kept:
        store.remove(digest)
    store.cleanup()
    unique = sum(blobs.size(d) for d in used)
    return Outcome(results, catalog, time.monotonic() - started, sink.notes, sink.hint(results), unique,
                   store.reused)
