"""Blobs a delta volume expects, found at the destination instead of sent.

A volume made with `regcarve pack --since` leaves out the configs and layers an earlier delivery shipped.
Pushed, such a blob is taken as present when the registry holds it: a `HEAD` in the image's own
repository (a re-tag, a new tag beside old ones), else a `HEAD` in each repository that may hold it — those
of this push that found it first, then those the delivery's pack.json names for it — and a mount
(`POST …?mount=&from=`) from the first that does. It is never uploaded (its bytes are not here); when no
repository holds it, the images that need it fail with one line naming the delivery it was expected from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from regcarve.sinks.registry import RegistryError, RegistryRefused
from regcarve.sinks.registry.graph import Task, TaskGraph
from regcarve.sinks.registry.plan import PushPlan
from regcarve.sinks.registry.requests import Requests

HERE = "here"  # the repository holds it already
MOUNTED = "mounted"  # mounted from another repository
WOULD_MOUNT = "would-mount"  # a dry run found it in another repository

SHOWN_REPOSITORIES = 4


class ExpectedBlobAbsent(RegistryError):
    """No repository of the registry that was asked holds a blob an earlier delivery should have brought."""


@dataclass(frozen=True)
class ExpectedFind:
    """Where to look for one expected blob needed in `repository`."""

    repository: str
    digest: str
    delivery: str  # the earlier delivery it is expected from (pack.json's `from`)
    candidates: tuple[str, ...]  # other repositories that may hold it, in the order to ask them

    def scopes(self, source: str | None = None) -> tuple[str, ...]:
        own = (f"repository:{self.repository}:pull,push",)
        return own + ((f"repository:{source}:pull",) if source else ())


def find_expected(requests: Requests, find: ExpectedFind, mount: bool = True) -> str:
    """HERE, MOUNTED (WOULD_MOUNT when not `mount`); ExpectedBlobAbsent when no repository asked holds it."""
    if requests.has_blob(find.repository, find.digest, find.scopes()):
        return HERE
    for source in find.candidates:
        try:
            there = requests.has_blob(source, find.digest, (f"repository:{source}:pull",))
        except RegistryRefused:  # not allowed to read it, or no such repository: not a source
            continue
        if not there:
            continue
        if not mount:
            return WOULD_MOUNT
        if requests.mount_blob(find.repository, find.digest, source, find.scopes(source)):
            return MOUNTED
    raise ExpectedBlobAbsent(absent_message(find), host=requests.transport.host)


def absent_message(find: ExpectedFind) -> str:
    asked = (find.repository,) + find.candidates
    shown = ", ".join(asked[:SHOWN_REPOSITORIES]) + (f" and {len(asked) - SHOWN_REPOSITORIES} more"
                                                     if len(asked) > SHOWN_REPOSITORIES else "")
    return (f"blob {find.digest} is expected from delivery {find.delivery or 'an earlier delivery'}, and the "
            f"registry holds it in none of: {shown}; push that delivery first")


def find_tasks(graph: TaskGraph, plan: PushPlan, look: Callable[[ExpectedFind], Callable[[], object]]
               ) -> dict[tuple[str, str], Task]:
    """A task per (repository, expected blob) of the plan, run by `look(find)`, after the tasks of the
    repositories it may mount from (so that what one finds, the next can mount)."""
    tasks: dict[tuple[str, str], Task] = {}
    for repo in plan.repositories.values():
        for digest, candidates in repo.finds.items():
            find = ExpectedFind(repo.name, digest, repo.delivery[digest], candidates)
            earlier = [tasks[c, digest] for c in candidates if (c, digest) in tasks]
            tasks[repo.name, digest] = graph.add(f"find {digest}", look(find), after=earlier)
    return tasks
