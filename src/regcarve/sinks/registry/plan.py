"""What a push sends, decided once: which blob goes to which repository, and which tags are already there.

Every blob is uploaded to one repository (its home) and mounted from there into every other
repository that needs it; a blob some repository is known to hold already (it holds a tag this run
would have pushed, with the same digest) has that repository as its home and is not uploaded at all.
A blob the image expects (a delta volume lacks it; an earlier delivery brought it) is never uploaded: it is
looked for (expected.py) in its repository, then in the repositories that may hold it, and mounted from there.
The plan is pure: it sends nothing, and `tests/test_push_plan.py` checks it with Hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from regcarve.sinks.base import ImageOut

PULL_PUSH = "pull,push"


@dataclass(eq=False, slots=True)
class TagPush:
    """One tag to put: the destination repository, the image, and whether the registry holds it already."""

    repository: str
    image: ImageOut
    present: bool = False  # the tag there names this very digest: nothing to send

    @property
    def tag(self) -> str:
        return self.image.tag

    def blobs(self) -> dict[str, int]:
        """Configs and layers (of the image and its child manifests) → size."""
        return {d.digest: d.size for d in self.image.blobs}


@dataclass
class RepositoryPlan:
    name: str
    tags: list[TagPush] = field(default_factory=list)
    uploads: dict[str, int] = field(default_factory=dict)  # blobs to upload here → size
    mounts: dict[str, str] = field(default_factory=dict)  # blobs to mount here → the repository they come from
    held: set[str] = field(default_factory=set)  # blobs known to be here already
    finds: dict[str, tuple[str, ...]] = field(default_factory=dict)  # expected blobs to look for → where else
    delivery: dict[str, str] = field(default_factory=dict)  # expected blob → the delivery it is expected from
    _scopes: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def scopes(self) -> tuple[str, ...]:
        """The token scopes its requests need: push here, pull where its mounts come from. Asked once the
        plan is made, for every request; the one tuple is kept (50,000 tags would otherwise make 50,000)."""
        if not self._scopes:
            sources = sorted(set(self.mounts.values()) - {self.name})
            self._scopes = (f"repository:{self.name}:{PULL_PUSH}",) + tuple(f"repository:{s}:pull" for s in sources)
        return self._scopes

    @property
    def to_push(self) -> list[TagPush]:
        return [t for t in self.tags if not t.present]


@dataclass
class PushPlan:
    repositories: dict[str, RepositoryPlan]
    sizes: dict[str, int]  # every blob's size

    def uploads(self) -> list[tuple[str, str]]:
        """(repository, blob) of every upload; each blob appears once at most."""
        return [(r.name, d) for r in self.repositories.values() for d in r.uploads]

    def finds(self) -> list[tuple[str, str]]:
        """(repository, expected blob) of every blob looked for at the destination."""
        return [(r.name, d) for r in self.repositories.values() for d in r.finds]

    def mounts(self) -> list[tuple[str, str, str]]:
        """(repository, blob, from repository) of every mount."""
        return [(r.name, d, src) for r in self.repositories.values() for d, src in r.mounts.items()]

    def upload_bytes(self) -> int:
        return sum(self.sizes[d] for _, d in self.uploads())


def plan_push(tags: list[TagPush], held: dict[str, set[str]] | None = None,
              hints: dict[str, tuple[str, ...]] | None = None) -> PushPlan:
    """The plan for these tags (their `present` already known): repositories in name order, and each
    blob's home the first repository that holds it, else the first that needs it. `held`: blobs
    known to be in a repository besides those of its present tags (a dry run asks). `hints`: for expected
    blobs, the destination repositories the delivery says use them."""
    repos: dict[str, RepositoryPlan] = {}
    for t in tags:
        repos.setdefault(t.repository, RepositoryPlan(t.repository)).tags.append(t)
    order = sorted(repos)
    sizes: dict[str, int] = {}
    home: dict[str, str] = {}
    for name in order:  # what is known to be there already
        plan = repos[name]
        plan.held.update((held or {}).get(name, ()))
        for t in plan.tags:
            if t.present:
                plan.held.update(t.blobs())
                sizes.update(t.blobs())
        for d in sorted(plan.held):
            home.setdefault(d, name)
    seekers: dict[str, list[str]] = {}  # expected blob → the repositories looking for it, in order
    for name in order:
        plan = repos[name]
        for t in plan.to_push:
            for d, size in t.blobs().items():
                sizes[d] = size
                if d in plan.held or d in plan.uploads or d in plan.mounts or d in plan.finds:
                    continue
                if d in t.image.expected:
                    where = ([home[d]] if d in home else []) + seekers.get(d, []) + list((hints or {}).get(d, ()))
                    plan.finds[d] = tuple(r for r in dict.fromkeys(where) if r != name)
                    plan.delivery[d] = t.image.expected[d]
                    seekers.setdefault(d, []).append(name)
                    continue
                source = home.setdefault(d, name)
                if source == name:
                    plan.uploads[d] = size
                else:
                    plan.mounts[d] = source
    return PushPlan(repos, sizes)
