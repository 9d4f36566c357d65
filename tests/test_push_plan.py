"""The push planner (sinks.registry.plan) and the destination names, with Hypothesis: whatever the tags,
every blob a pushed tag needs is in its repository exactly once — held, uploaded or mounted — each blob is
uploaded at most once, and a mount comes from a repository that holds or uploads that blob."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regcarve.model.catalog import ImageKind
from regcarve.model.manifests import Descriptor, ParsedManifest
from regcarve.plan.output import ImageOut, ManifestOut
from regcarve.sinks.registry.destination import Destination
from regcarve.sinks.registry.plan import TagPush, plan_push

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def image(repo: str, tag: str, blobs: list[int], expected: frozenset[int] = frozenset()) -> ImageOut:
    descs = tuple(Descriptor(LAYER, f"sha256:{b:064x}", 100 + b) for b in dict.fromkeys(blobs))
    manifest = ManifestOut(f"sha256:{hash((repo, tag)) & (2**256 - 1):064x}", "application/x", b"{}",
                           ParsedManifest("application/x", layers=list(descs)), ImageKind.IMAGE, None)
    return ImageOut(repo, tag, manifest, (), descs, (), manifest.digest,
                    expected={f"sha256:{b:064x}": "deliv-a" for b in blobs if b in expected})


tags_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b/c", "d", "e/f/g"]), st.sampled_from(["1", "2", "3"]),
              st.lists(st.integers(0, 12), min_size=1, max_size=5), st.booleans()),
    max_size=25, unique_by=lambda t: (t[0], t[1]))


@settings(max_examples=300, deadline=None)
@given(tags_strategy)
def test_every_needed_blob_is_placed_once_and_uploaded_at_most_once(spec):
    tags = [TagPush(repo, image(repo, tag, blobs), present) for repo, tag, blobs, present in spec]
    plan = plan_push(tags)
    uploads = plan.uploads()
    assert len({d for _, d in uploads}) == len(uploads)
    holders = {(r.name, d) for r in plan.repositories.values() for d in r.held} | set(uploads)
    for repo in plan.repositories.values():
        needed = {d.digest for t in repo.to_push for d in t.image.blobs}
        placed = [d for d in repo.uploads] + list(repo.mounts)
        assert len(placed) == len(set(placed)) and not set(placed) & repo.held
        assert needed <= repo.held | set(placed)
        for d, source in repo.mounts.items():
            assert source != repo.name and (source, d) in holders
        assert repo.scopes()[0] == f"repository:{repo.name}:pull,push"
        assert {s.split(":")[1] for s in repo.scopes()[1:]} == set(repo.mounts.values())
    present_blobs = {d.digest for t in tags if t.present for d in t.image.blobs}
    assert not {d for _, d in uploads} & present_blobs  # what a present tag proves there is never sent


def test_nothing_to_send_when_every_tag_is_present():
    tags = [TagPush("a", image("a", "1", [1, 2]), True), TagPush("b", image("b", "1", [2, 3]), True)]
    plan = plan_push(tags)
    assert plan.uploads() == [] and plan.mounts() == [] and plan.upload_bytes() == 0


def test_a_dry_run_s_knowledge_turns_uploads_into_mounts():
    tags = [TagPush("a", image("a", "1", [1])), TagPush("b", image("b", "1", [1]))]
    assert plan_push(tags).uploads() == [("a", f"sha256:{1:064x}")]
    plan = plan_push(tags, held={"b": {f"sha256:{1:064x}"}})
    assert plan.uploads() == [] and plan.mounts() == [("a", f"sha256:{1:064x}", "b")]


@settings(max_examples=300, deadline=None)
@given(tags_strategy, st.frozensets(st.integers(0, 12)), st.dictionaries(st.integers(0, 12), st.lists(
    st.sampled_from(["a", "b/c", "d", "e/f/g", "x"]), max_size=3), max_size=6))
def test_an_expected_blob_is_looked_for_never_sent(spec, expected, hints):
    """A blob the delta volume lacks is held or looked for in every repository that needs it, never uploaded
    or mounted blindly; where to look: a repository holding it first, then those that looked before, then
    the delivery's hints; never the repository itself."""
    tags = [TagPush(repo, image(repo, tag, blobs, expected), present) for repo, tag, blobs, present in spec]
    hinted = {f"sha256:{b:064x}": tuple(repos) for b, repos in hints.items()}
    plan = plan_push(tags, hints=hinted)
    wanted = {f"sha256:{b:064x}" for b in expected}
    assert not {d for _, d in plan.uploads()} & wanted and not {d for _, d, _ in plan.mounts()} & wanted
    seekers: dict[str, list[str]] = {}
    for repo in (plan.repositories[name] for name in sorted(plan.repositories)):  # as the plan visits them
        needed = {d.digest for t in repo.to_push for d in t.image.blobs} & wanted
        assert needed <= repo.held | set(repo.finds) and not set(repo.finds) & repo.held
        for d, where in repo.finds.items():
            assert repo.name not in where and len(where) == len(set(where)) and repo.delivery[d] == "deliv-a"
            holders = [name for name in sorted(plan.repositories) if d in plan.repositories[name].held]
            assert set(seekers.get(d, [])) | {h for h in hinted.get(d, ()) if h != repo.name} <= set(where)
            assert not holders or where[0] == holders[0]
            seekers.setdefault(d, []).append(repo.name)


@pytest.mark.parametrize("text,project,source,landed", [
    ("h:5000", "", "app", "app"),
    ("h:5000", "library", "app", "library/app"),
    ("h:5000", "library", "team/web", "team/web"),
    ("h.io/mirror", "library", "app", "mirror/app"),
    ("h.io/a/b", "", "team/web", "a/b/team/web"),
])
def test_destination_names(text, project, source, landed):
    assert Destination.parse(text, project).repository(source) == landed


@pytest.mark.parametrize("text", ["https://h", "h/UP", "h//x", "", "h:port"])
def test_destination_refuses_what_is_not_one(text):
    with pytest.raises(ValueError):
        Destination.parse(text)


def test_default_project_is_one_valid_component():
    for bad in ("a/b", "UP", "-x"):
        with pytest.raises(ValueError):
            Destination.parse("h", bad)
