"""`list --json` and `--report` are written as they are made (issue 19): the same bytes json.dumps
would give, while the memory the writer needs stays small however many tags there are."""

from __future__ import annotations

import io
import json
import tracemalloc
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import GC_ARCHIVE, MAIN_ARCHIVE, SIGNED_ARCHIVE
from regcarve.model.catalog import Catalog, resolve
from regcarve.report import (
    Rendered,
    Streamed,
    catalog_json,
    json_parts,
    report_json,
    write_inventory,
    write_report,
)
from regcarve.run import Outcome
from regcarve.sinks.base import Result, Status
from regcarve.sources.tarball import open_input
from regcarve.sources.tarball.scan import scan
from storagetar import Storage

TAGS = 3000


def catalog_of(data: bytes) -> Catalog:
    with open_input(io.BytesIO(data)) as inp:
        return resolve(scan(inp))


@pytest.fixture(scope="module")
def many_tags() -> Catalog:
    """A real storage tar of TAGS tags over a few images (as a CI registry tags its builds)."""
    s = Storage()
    images = [s.image(f"team/app{i}", "1.0", seed=i, layers=3, oci=i % 2 == 0) for i in range(6)]
    for n in range(TAGS - len(images)):
        image = images[n % len(images)]
        s.tag(image.repo, f"1.0-build{n}", image.digest)
    return catalog_of(s.tar())


class CountingSink(io.TextIOBase):
    """A text stream that keeps only how much was written to it, and the largest single write."""

    def __init__(self) -> None:
        self.chars = 0
        self.largest = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        self.largest = max(self.largest, len(text))
        return len(text)


VALUES = [
    {}, [], {"a": []}, {"a": {}}, [[], {}], {"a": None, "b": [1, 2, {"c": "é\n\"x\""}], "d": {"e": {"f": [True]}}},
    "plain", 3, None, [{"k": [{"x": 1}, {}]}],
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_parts_are_the_bytes_of_json_dumps(value):
    expected = json.dumps(value, indent=2)
    assert "".join(json_parts(value)) == expected
    streamed = {"before": value, "items": Streamed(iter([value, value])), "rendered": Rendered(expected)}
    assert "".join(json_parts(streamed)) == json.dumps({"before": value, "items": [value, value],
                                                         "rendered": value}, indent=2)
    assert "".join(json_parts({"x": [1], "empty": Streamed(iter(()))})) == json.dumps({"x": [1], "empty": []},
                                                                                        indent=2)


@pytest.mark.parametrize("archive", [MAIN_ARCHIVE, GC_ARCHIVE, SIGNED_ARCHIVE], ids=["registry", "gc-damaged", "signed"])
@pytest.mark.parametrize("untagged", [False, True])
def test_inventory_written_in_parts_is_the_document(archive, untagged):
    catalog = catalog_of(archive.read_bytes())
    out = io.StringIO()
    write_inventory(out, catalog, untagged)
    assert out.getvalue() == json.dumps(catalog_json(catalog, untagged), indent=2) + "\n"


def shared_manifests() -> Catalog:
    """Tags naming one manifest: in two repositories, one of them a cosign tag (an attachment), beside a
    broken tag and a tag whose name needs escaping in JSON."""
    s = Storage()
    image = s.image("app", "a", seed=1)
    for repo, tag in (("app", "b"), ("other", "x"), ("app", "sha256-" + "0" * 64 + ".sig")):
        s.push(replace(image, repo=repo, tag=tag))
    sig = s.image("app", f"sha256-{image.digest[7:]}.sig", seed=2)
    s.tag("app", "plain", sig.digest)
    broken = s.image("app", "c", seed=3)
    s.drop_blob(broken.layer_digests[0])
    s.tag("app", "d", broken.digest)
    return catalog_of(s.tar())


@pytest.mark.parametrize("make", [lambda: shared_manifests(), lambda: None], ids=["shared", "many"])
def test_tags_sharing_a_manifest_are_written_as_the_document(make, many_tags):
    """The text of what tags naming one manifest share is made once: each tag's object is still its own."""
    catalog = make() or many_tags
    out = io.StringIO()
    write_inventory(out, catalog, True)
    assert out.getvalue() == json.dumps(catalog_json(catalog, True), indent=2) + "\n"
    tags = {t["ref"]: t for t in json.loads(out.getvalue())["tags"]}
    assert len(tags) == len(catalog.images)


def peak_of(work) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_inventory_of_many_tags_is_written_in_small_memory(many_tags):
    whole = json.dumps(catalog_json(many_tags), indent=2)
    assert len(whole) > 3_000_000, "the document must be large for the bound below to mean anything"
    # the control: what writing it whole takes, as measured here
    assert peak_of(lambda: CountingSink().write(json.dumps(catalog_json(many_tags), indent=2))) > len(whole)
    sink = CountingSink()
    peak = peak_of(lambda: write_inventory(sink, many_tags))
    assert sink.chars == len(whole) + 1
    # Built whole, the document and its text take several times its size; streamed, the writer
    # holds one buffered write and the texts of the manifests it has rendered.
    assert sink.largest < 100_000
    assert peak < len(whole) / 10, f"peak {peak} B while writing {len(whole)} B"


def test_report_of_many_images_is_written_in_small_memory(many_tags, tmp_path):
    results = [Result(i.ref, Status.WRITTEN, path=f"{i.repository}/{i.tag}", digest=i.digest,
                      media_type=i.media_type) for i in many_tags.images]
    outcome = Outcome(results, many_tags, 0.0, [], [])
    whole = json.dumps(report_json(outcome, "dir", "OUT"), indent=2) + "\n"
    assert len(whole) > 800_000
    path = tmp_path / "report.json"
    assert peak_of(lambda: path.write_bytes(json.dumps(report_json(outcome, "dir", "OUT"), indent=2).encode())) \
        > len(whole), "the control: written whole"
    peak = peak_of(lambda: write_report(path, outcome, "dir", "OUT"))
    assert path.read_text() == whole
    assert peak < len(whole) / 4, f"peak {peak} B while writing {len(whole)} B"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from("ab\0\n\"é rendered0")),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@example(own={"spells the marker": "\0rendered 0\0"}, manifest={"a": [1]}, level=1)
@given(own=st.dictionaries(st.text(max_size=3), _JSON, max_size=4), manifest=_JSON, level=st.integers(0, 2))
def test_a_tag_object_with_its_rendered_manifest_is_the_bytes_of_json_dumps(own, manifest, level):
    """A tag's object (Rendered manifest beside plain keys, strings that spell the markers too), alone, nested,
    and inside a Streamed array: always what json.dumps writes of the plain value."""
    value = {**own, "manifest": Rendered(json.dumps(manifest, indent=2))}
    plain = {**own, "manifest": manifest}
    wrapped, expected = value, plain
    for _ in range(level):
        wrapped, expected = {"tags": Streamed(iter([wrapped]))}, {"tags": [expected]}
    assert "".join(json_parts(wrapped)) == json.dumps(expected, indent=2)


_SCALAR = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(alphabet=st.sampled_from("ab\0\n\"\\é\u2028 \ud800")))


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(st.text(max_size=3), _SCALAR, max_size=6), level=st.integers(0, 2))
def test_a_flat_object_is_the_bytes_of_json_dumps(value, level):
    """A report's image (string keys, scalar values: written member by member by the fast encoder), alone, nested
    and inside a Streamed array: what json.dumps writes."""
    def streamed(depth: int) -> object:  # each Streamed array made afresh: its items are read once
        return value if depth == 0 else {"images": Streamed(iter([streamed(depth - 1), streamed(depth - 1)]))}

    expected = value
    for _ in range(level):
        expected = {"images": [expected, expected]}
    assert "".join(json_parts(streamed(level))) == json.dumps(expected, indent=2)
