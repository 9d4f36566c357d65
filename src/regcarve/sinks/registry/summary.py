"""What a push says: why an image failed (with what a site can do about it), and the closing summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from regcarve.model.catalog import ImageKind
from regcarve.plan.output import ImageOut
from regcarve.sinks.base import Status
from regcarve.sinks.registry import RegistryRefused, RegistryUnavailable
from regcarve.sinks.registry.destination import Destination
from regcarve.sinks.registry.plan import PushPlan
from regcarve.sinks.registry.transport import CounterSnapshot

@dataclass
class PushStats:
    uploaded: int = 0
    uploaded_bytes: int = 0
    mounted: int = 0
    manifests: int = 0
    expected_found: int = 0  # blobs a delta volume expects, found in the repository that needs them
    expected_mounted: int = 0  # … found in another repository and mounted (a dry run: would be)
    projects: list[str] = field(default_factory=list)  # Harbor projects (first path components) the images land in
    failed_projects: dict[str, list[str]] = field(default_factory=dict)  # project → refs that failed for it


SCHEMA1_HINT = ("; this registry does not take schema1 manifests (Distribution without "
                "compatibility.schema1.enabled, or v3): push them to one that does")
FOREIGN_HINT = ("; the image has foreign layers whose bytes the source lacks: the registry must allow their "
                "URLs (Distribution: validation.manifests.urls.allow)")
PROJECT_CODES = {"NAME_UNKNOWN", "NOT_FOUND", "DENIED", "UNAUTHORIZED", "PROJECT_NOT_FOUND"}


def _status(error: BaseException) -> int | None:
    return getattr(error, "status", None)


def may_lack_project(error: BaseException) -> bool:
    """A refusal Harbor gives a push into a project it does not have."""
    if not isinstance(error, RegistryRefused) or error.status not in (401, 403, 404):
        return False
    return any(e.code in PROJECT_CODES or "project" in e.message.lower() for e in error.errors) or \
        error.status == 403


def failure_reason(error: BaseException | None, step: str = "", image: ImageOut | None = None) -> str:
    """One line: the step that failed, the registry's own words, and a hint where one is known."""
    text = f"{step}{error}"
    manifest_refused = isinstance(error, (RegistryRefused, RegistryUnavailable)) and _status(error) in (400, 500)
    if image is not None and manifest_refused and not step:
        if image.manifest.kind is ImageKind.SCHEMA1:
            text += SCHEMA1_HINT
        elif image.absent_foreign:
            text += FOREIGN_HINT
    return text


def summary_lines(stats: PushStats, plan: PushPlan | None, dest: Destination, dry_run: bool,
                  requests: CounterSnapshot, counts: Counter) -> list[str]:
    done = counts[Status.PUSHED] + counts[Status.PRESENT]
    lines = []
    if dry_run and plan is not None:
        lines.append(f"dry run: {counts[Status.PLANNED]} tag(s) would be pushed to {dest}, {counts[Status.PRESENT]} "
                     f"are there already; {len(plan.uploads())} blob(s) would be uploaded "
                     f"({plan.upload_bytes() / 1e6:.1f} MB), {len(plan.mounts())} mounted, "
                     f"{sum(len(r.to_push) for r in plan.repositories.values())} tag manifest(s) put; nothing was sent")
    else:
        lines.append(f"{done} tag(s) at {dest} ({counts[Status.PUSHED]} pushed, {counts[Status.PRESENT]} there "
                     f"already), {counts[Status.SKIPPED]} skipped, {counts[Status.FAILED]} failed; "
                     f"{stats.uploaded} blob(s) uploaded ({stats.uploaded_bytes / 1e6:.1f} MB), {stats.mounted} "
                     f"mounted, {stats.manifests} manifest(s) put")
    if stats.expected_found or stats.expected_mounted:
        verb = "would be mounted" if dry_run else "mounted"
        lines.append(f"{stats.expected_found + stats.expected_mounted} blob(s) expected from earlier deliveries "
                     f"found in the registry ({stats.expected_mounted} {verb} from another repository)")
    c = requests
    by_method = ", ".join(f"{n} {m}" for m, n in sorted(c.requests.items()))
    lines.append(f"{sum(c.requests.values())} request(s) ({by_method or 'none'}), {c.retries} retried, "
                 f"{c.tokens_fetched} token(s) fetched")
    if stats.projects:
        lines.append(f"Harbor projects this push needs (create them first): {', '.join(stats.projects)}")
    for project, refs in sorted(stats.failed_projects.items()):
        shown = ", ".join(refs[:3]) + (", …" if len(refs) > 3 else "")
        lines.append(f"failed, maybe for want of project {project!r} at {dest.host}: {len(refs)} image(s) "
                     f"({shown})")
    return lines
