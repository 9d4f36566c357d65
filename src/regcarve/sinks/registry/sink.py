"""A registry as a sink: every image pushed, digests unchanged, by a pool of workers.

The push goes in three steps. First, what the destination holds: each repository's tag list, then a
HEAD of each tag it lists that this run would push — a tag naming the same digest is present and
sends nothing else. Then the plan (plan.py): each blob uploaded once, mounted everywhere else. Then
the workers: blobs, then child manifests, then each tag's manifest, which goes only once everything
it needs is there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import partial

from regcarve.blobs.source import BlobSource
from regcarve.model.names import repository_name_problem
from regcarve.plan.output import ManifestOut
from regcarve.sinks.base import Capabilities, ImageFailed, ImageOut, Result, Status
from regcarve.sinks.registry import AuthenticationFailed, RegistryError, RegistryUnreachable, TLSFailure
from regcarve.sinks.registry.destination import Destination, project_of
from regcarve.sinks.registry.expected import HERE, ExpectedBlobAbsent, find_expected, find_tasks
from regcarve.sinks.registry.graph import Task, TaskGraph
from regcarve.sinks.registry.plan import PushPlan, RepositoryPlan, TagPush, plan_push
from regcarve.sinks.registry.probe import probe, push_scope
from regcarve.sinks.registry.requests import Requests
from regcarve.sinks.registry.summary import PushStats, failure_reason, may_lack_project, summary_lines
from regcarve.sinks.registry.transport import Transport

Outcome = Status | BaseException
TAG_TASK = "tag"  # one name for every tag's task: the failure names the image already


class RegistrySink:
    format = "registry"
    capabilities = Capabilities(finds_expected_blobs=True)

    def __init__(self, transport: Transport, destination: Destination, blobs: BlobSource, jobs: int,
                 dry_run: bool = False, hints: dict[str, tuple[str, ...]] | None = None):
        """`hints`: for blobs a delta volume expects, the source repositories its delivery says use them."""
        self.transport, self.destination, self.blobs = transport, destination, blobs
        self.jobs, self.dry_run = jobs, dry_run
        self.hints = {d: tuple(destination.repository(r) for r in repos) for d, repos in (hints or {}).items()}
        self.requests = Requests(transport, blobs)
        self.notes: list[str] = []
        self.stats = PushStats()
        self.plan: PushPlan | None = None
        self.finds: set[Task] = set()  # the tasks looking for expected blobs
        self._down: RegistryError | None = None

    def relpath(self, repository: str, tag: str) -> str:
        return self.destination.reference(self.destination.repository(repository), tag)

    def prepare(self, images: list[ImageOut]) -> None:
        pass

    def write(self, image: ImageOut) -> None:
        for _, outcome in self.write_all([image]):
            if isinstance(outcome, BaseException):
                raise outcome

    def write_all(self, images: list[ImageOut]) -> Iterator[tuple[ImageOut, Outcome]]:
        tags = []
        for image, outcome in tag_pushes(self.destination, images):
            if isinstance(outcome, TagPush):
                tags.append(outcome)
            else:
                yield image, outcome
        self.stats.projects = sorted({project_of(t.repository) for t in tags if "/" in t.repository})
        left: list[TagPush] = []
        for t, outcome in self._probe(tags):
            if outcome is None:
                left.append(t)
            else:
                yield t.image, outcome
        if self.dry_run:
            self.plan = plan_push(left, self._held(left), self.hints)
            yield from self._dry_run(self.plan)
            return
        self.plan = plan_push(left, hints=self.hints)
        yield from self._push(self.plan)

    # --- what the destination holds ----------------------------------------------------------
    def _probe(self, tags: list[TagPush]) -> Iterator[tuple[TagPush, Outcome | None]]:
        return probe(tags, self.requests, self._call, self.jobs)

    def _held(self, tags: list[TagPush]) -> dict[str, set[str]]:
        """A dry run's HEAD of every blob in every repository that needs it."""
        graph = TaskGraph(self.jobs, expected=(RegistryError,))
        asked: dict[Task, tuple[str, str]] = {}
        for repo, digest in sorted({(t.repository, d) for t in tags if not t.present for d in t.blobs()}):
            scopes = push_scope(repo)
            asked[graph.add(f"head {digest}", partial(self._call, self.requests.has_blob, repo, digest, scopes))] = (repo, digest)
        held: dict[str, set[str]] = {}
        for task in graph.run():
            if task.result:
                repo, digest = asked[task]
                held.setdefault(repo, set()).add(digest)
        return held

    def _dry_run(self, plan: PushPlan) -> Iterator[tuple[ImageOut, Outcome]]:
        """Each tag to push PLANNED, unless a blob it expects is in no repository asked (only HEADs sent)."""
        graph = TaskGraph(self.jobs, expected=(RegistryError,))
        finds = self._find_tasks(graph, plan, mount=False)
        for task in graph.run():
            if task.error is None:
                self._count(task, None, plan)
        for t in (t for repo in plan.repositories.values() for t in repo.to_push):
            failed = [finds[k] for k in ((t.repository, d) for d in t.blobs()) if k in finds and finds[k].error]
            yield t.image, (self._failed(t, failed[0]) if failed else Status.PLANNED)

    # --- the push ----------------------------------------------------------------------------
    def _push(self, plan: PushPlan) -> Iterator[tuple[ImageOut, Outcome]]:
        graph = TaskGraph(self.jobs, expected=(RegistryError,))
        blob_tasks = self._blob_tasks(graph, plan) | self._find_tasks(graph, plan)
        tag_tasks: dict[Task, TagPush] = {}
        for repo in plan.repositories.values():
            children: dict[str, Task] = {}
            for t in repo.to_push:
                image = t.image
                needs = self._needs(graph, repo, image, image.manifest, blob_tasks, children)
                tag_tasks[graph.add(TAG_TASK, partial(self._put_tag, t, repo), needs=needs)] = t
        blob_of = {task: digest for (_, digest), task in blob_tasks.items()}
        for task in graph.run():
            if task.error is None:
                self._count(task, blob_of.get(task), plan)
            t = tag_tasks.get(task)
            if t is None:
                continue
            if task.error is None:
                yield t.image, Status.PUSHED
            else:
                yield t.image, self._failed(t, task.root_cause)

    def _put_tag(self, t: TagPush, repo: RepositoryPlan) -> object:
        return self._call(self.requests.put_manifest, repo.name, t.tag, t.image.manifest, repo.scopes())

    def _blob_tasks(self, graph: TaskGraph, plan: PushPlan) -> dict[tuple[str, str], Task]:
        tasks: dict[tuple[str, str], Task] = {}
        for repo in plan.repositories.values():
            for digest in repo.uploads:
                send = partial(self._call, self.requests.send_blob, repo.name, digest, repo.name, repo.scopes())
                tasks[repo.name, digest] = graph.add(f"upload {digest}", send)
        for repo in plan.repositories.values():
            for digest, source in repo.mounts.items():
                home = tasks.get((source, digest))
                send = partial(self._call, self.requests.send_blob, repo.name, digest, source, repo.scopes())
                tasks[repo.name, digest] = graph.add(f"mount {digest}", send, after=[home] if home else [])
        return tasks

    def _find_tasks(self, graph: TaskGraph, plan: PushPlan, mount: bool = True) -> dict[tuple[str, str], Task]:
        tasks = find_tasks(graph, plan, lambda find: partial(self._call, find_expected, self.requests, find, mount))
        self.finds = set(tasks.values())
        return tasks

    def _needs(self, graph: TaskGraph, repo: RepositoryPlan, image: ImageOut, manifest: ManifestOut,
               blob_tasks: dict[tuple[str, str], Task], children: dict[str, Task]) -> list[Task]:
        """The tasks a manifest needs in `repo`: its own blobs, and its children put (tasks made once)."""
        parsed = manifest.parsed
        own = ([parsed.config] if parsed.config else []) + parsed.layers
        needs = [blob_tasks[repo.name, d.digest] for d in own if (repo.name, d.digest) in blob_tasks]
        by_digest = {m.digest: m for m in image.children}
        for child in parsed.manifests:
            m = by_digest.get(child.digest)
            if m is None:
                continue
            if m.digest not in children:
                child_needs = self._needs(graph, repo, image, m, blob_tasks, children)
                children[m.digest] = graph.add(f"manifest {m.digest}", partial(
                    self._call, self.requests.put_manifest, repo.name, m.digest, m, repo.scopes()), needs=child_needs)
            needs.append(children[m.digest])
        return needs

    def _count(self, task: Task, blob: str | None, plan: PushPlan) -> None:
        """A task done: a blob sent (its result: whether its bytes went) or found (expected), a manifest put."""
        if task in self.finds:
            self.stats.expected_found += task.result == HERE
            self.stats.expected_mounted += task.result != HERE
        elif blob is None:
            self.stats.manifests += 1
        elif task.result:
            self.stats.uploaded += 1
            self.stats.uploaded_bytes += plan.sizes[blob]
        else:
            self.stats.mounted += 1

    def _failed(self, t: TagPush, cause: Task) -> ImageFailed:
        step = "" if cause.name == TAG_TASK or isinstance(cause.error, ExpectedBlobAbsent) else f"{cause.name}: "
        if "/" in t.repository and may_lack_project(cause.error):
            self.stats.failed_projects.setdefault(project_of(t.repository), []).append(t.image.ref)
        return ImageFailed(failure_reason(cause.error, step, t.image))

    def _call(self, request, *args):
        """A request, unless the registry was found gone (then every later one fails at once, alike)."""
        if self._down is not None:
            raise self._down
        try:
            return request(*args)
        except (RegistryUnreachable, TLSFailure, AuthenticationFailed) as e:
            self._down = e
            raise

    # --- after --------------------------------------------------------------------------------
    def finish(self, results: list[Result]) -> None:
        pass

    def hint(self, results: list[Result]) -> list[str]:
        counts = Counter(r.status for r in results)
        return summary_lines(self.stats, self.plan, self.destination, self.dry_run, self.transport.counters, counts)


def tag_pushes(destination: Destination, images: list[ImageOut]) -> Iterator[tuple[ImageOut, TagPush | ImageFailed]]:
    """Each image with its destination repository; a name the registry cannot take, or two source
    repositories landing in one, fail."""
    # a repository that keeps its name keeps it; one moved into a project cannot take it over
    sources = {destination.repository(i.repository): i.repository for i in images
               if destination.repository(i.repository) == i.repository}
    for image in images:
        repo = destination.repository(image.repository)
        first = sources.setdefault(repo, image.repository)
        if (why := repository_name_problem(repo)) is not None:
            yield image, ImageFailed(f"destination repository: {why}")
        elif first != image.repository:
            yield image, ImageFailed(f"{image.repository} would land in {repo}, which {first} fills already; "
                                     "push one of them elsewhere")
        else:
            yield image, TagPush(repo, image)
