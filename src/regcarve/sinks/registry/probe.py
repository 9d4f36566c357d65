"""What the destination holds already: each repository's tag list, then a HEAD of each tag it lists that
this run would push. A tag naming the same digest there is present, and nothing of it is sent.

The HEADs go in batches of tags of one repository, a task each: a task per tag (its call, its name, its
answer) was most of what a push of 50,000 tags held. Batches still spread over every worker, also for a
single repository of many tags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from regcarve.sinks.base import ImageFailed, Status
from regcarve.sinks.registry import RegistryError
from regcarve.sinks.registry.graph import Task, TaskGraph
from regcarve.sinks.registry.plan import PULL_PUSH, TagPush
from regcarve.sinks.registry.requests import Requests
from regcarve.sinks.registry.summary import failure_reason

HEADS_PER_TASK = 64
ASKING = "asking what the registry holds: "
Call = Callable[..., object]  # a request, through the sink (which notes a registry that is gone)


def push_scope(repository: str) -> tuple[str, ...]:
    return (f"repository:{repository}:{PULL_PUSH}",)


def probe(tags: list[TagPush], requests: Requests, call: Call,
          jobs: int) -> Iterator[tuple[TagPush, Status | ImageFailed | None]]:
    """Each tag, PRESENT when the registry has it with this digest (`present` set), its error when the
    registry could not be asked, else None (to push)."""
    graph = TaskGraph(jobs, expected=(RegistryError,))
    by_repository: dict[str, list[TagPush]] = {}
    for t in tags:
        by_repository.setdefault(t.repository, []).append(t)
    batches: dict[Task, list[TagPush]] = {}
    for repository, its in by_repository.items():
        listed = graph.add(f"tags {repository}", partial(call, requests.existing_tags, repository,
                                                         push_scope(repository)))
        for k in range(0, len(its), HEADS_PER_TASK):
            batch = its[k:k + HEADS_PER_TASK]
            batches[graph.add(f"head {repository}", partial(_heads, batch, listed, requests, call),
                              needs=(listed,))] = batch
    del by_repository
    for task in graph.run():
        batch = batches.pop(task, None)
        if batch is None:
            continue  # a tag list: the batches that need it follow
        if task.error is not None:
            for t in batch:
                yield t, ImageFailed(failure_reason(task.root_cause.error, ASKING))
            continue
        answers, task.result = task.result, None
        for t, answer in zip(batch, answers):
            if isinstance(answer, RegistryError):
                yield t, ImageFailed(failure_reason(answer, ASKING))
            else:
                t.present = answer == t.image.manifest.digest
                yield t, Status.PRESENT if t.present else None


def _heads(batch: list[TagPush], listed: Task, requests: Requests, call: Call) -> list[object]:
    """For each tag of the batch: the digest the registry has for it, None when it has none, or the
    error asking met (the others are still asked)."""
    answers: list[object] = []
    for t in batch:
        if t.tag not in listed.result:
            answers.append(None)
            continue
        try:
            answers.append(call(requests.manifest_digest, t.repository, t.tag, push_scope(t.repository)))
        except RegistryError as e:
            answers.append(e)
    return answers
