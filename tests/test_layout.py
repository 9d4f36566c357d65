"""The storage layout parser: what each path below docker/registry/v2 means, and link files."""

import pytest
from hypothesis import given, strategies as st

from regcarve.sources.layout import EntryKind, LinkError, classify, parse_link

HEX = "a" * 60 + "1234"
DIGEST = "sha256:" + HEX


@pytest.mark.parametrize("prefix", ["", "./", "var/lib/registry/", "data/registry/", "/abs/"])
def test_blob_data_is_found_behind_any_prefix(prefix):
    e = classify(f"{prefix}docker/registry/v2/blobs/sha256/aa/{HEX}/data")
    assert e.kind is EntryKind.BLOB_DATA and e.digest == DIGEST


def test_anchor_must_start_a_component():
    assert classify(f"xdocker/registry/v2/blobs/sha256/aa/{HEX}/data") is None
    assert classify("somewhere/else/file") is None


@pytest.mark.parametrize("path", [
    f"blobs/sha256/ab/{HEX}/data",  # fan-out directory does not match the digest
    f"blobs/sha256/aa/{HEX}/other",
    f"blobs/sha512/aa/{HEX}/data",
    "blobs/sha256/aa/AAAA/data",
])
def test_malformed_blob_paths_are_not_blobs(path):
    assert classify("docker/registry/v2/" + path).kind is EntryKind.OTHER


@pytest.mark.parametrize("rel,kind,repo,tag", [
    (f"a/_layers/sha256/{HEX}/link", EntryKind.LAYER_LINK, "a", ""),
    (f"team/sub/api/_manifests/revisions/sha256/{HEX}/link", EntryKind.REVISION_LINK, "team/sub/api", ""),
    ("x/y/_manifests/tags/v1.0/current/link", EntryKind.TAG_CURRENT, "x/y", "v1.0"),
    (f"x/_manifests/tags/v1/index/sha256/{HEX}/link", EntryKind.TAG_INDEX, "x", "v1"),
    ("x/_uploads/1234-uuid/data", EntryKind.UPLOAD, "x", ""),
    (f"x/_manifests/revisions/sha256/{HEX}/signatures/sha256/{HEX}/link", EntryKind.SIGNATURE_LINK, "x", ""),
    ("foo/latest/_manifests/tags/1/current/link", EntryKind.TAG_CURRENT, "foo/latest", "1"),
    (f"x/_layers/tarsum/v1/sha256/{HEX}/link", EntryKind.OTHER, "x", ""),
])
def test_repository_paths(rel, kind, repo, tag):
    e = classify("docker/registry/v2/repositories/" + rel)
    assert (e.kind, e.repository, e.tag) == (kind, repo, tag)


def test_link_parsing_is_lenient_about_whitespace_strict_about_digest():
    assert parse_link(DIGEST.encode()) == DIGEST
    assert parse_link(f"  {DIGEST}\n".encode()) == DIGEST
    for bad in [b"", b"garbage", DIGEST.upper().encode(), (DIGEST + "0").encode(), b"sha512:" + HEX.encode(),
                b"\xff\xfe"]:
        with pytest.raises(LinkError):
            parse_link(bad)


@given(st.lists(st.text(st.characters(blacklist_characters="/\0"), min_size=1, max_size=12), min_size=1, max_size=6))
def test_classify_never_crashes(parts):
    name = "docker/registry/v2/repositories/" + "/".join(parts)
    e = classify(name)
    assert e is not None


@pytest.mark.parametrize("root", ["registry/v2/", "v2/", "./v2/", "/registry/v2/"])
def test_a_name_rooted_lower_is_storage(root):
    e = classify(f"{root}blobs/sha256/aa/{HEX}/data")
    assert e.kind is EntryKind.BLOB_DATA and e.digest == DIGEST
    assert classify(f"{root}repositories/x/_manifests/tags/v1/current/link").kind is EntryKind.TAG_CURRENT


@pytest.mark.parametrize("name", [
    f"some/v2/blobs/sha256/aa/{HEX}/data",  # a short root only where the name starts
    "v2/",  # the folder alone says nothing
    "v2/api/openapi.json",  # some other folder called v2
    f"xregistry/v2/blobs/sha256/aa/{HEX}/data",
])
def test_a_short_root_needs_the_start_of_the_name_and_a_storage_folder(name):
    assert classify(name) is None


_piece = st.sampled_from(["repositories", "blobs", "sha256", "sha512", "_manifests", "tags", "current", "link",
                          "index", "revisions", "_layers", "_uploads", "signatures", "data", "", "x", "_x", "team",
                          "v1.0", "aa", HEX, "aa" + HEX[2:], HEX.upper(), HEX + "0", "é", "a b"])


_TAILS = [["_manifests", "tags", "v1", "current", "link"], ["_manifests", "tags", "v1", "index", "sha256", HEX, "link"],
          ["_manifests", "revisions", "sha256", HEX, "link"], ["_layers", "sha256", HEX, "link"],
          ["_manifests", "revisions", "sha256", HEX, "signatures", "sha256", HEX, "link"]]
_near_common = st.one_of(
    st.tuples(st.lists(st.sampled_from(["team", "_x", "", "x", "a b", "_manifests", "é"]), max_size=3),
              st.sampled_from(_TAILS)).map(lambda t: ["repositories", *t[0], *t[1]]),
    st.just(["blobs", "sha256", "aa", "aa" + HEX[2:], "data"]),
).flatmap(lambda path: st.tuples(st.just(path), st.integers(0, len(path) - 1), _piece))


@given(st.one_of(st.lists(_piece, min_size=1, max_size=12),
                 _near_common.map(lambda t: [*t[0][:t[1]], t[2], *t[0][t[1] + 1:]]),  # one piece replaced
                 _near_common.map(lambda t: t[0])),
       st.booleans())
def test_common_paths_read_as_the_general_rules_read_them(pieces, slash):
    """classify matches the paths nearly every member has in one regex; the rules for every path must agree."""
    import re

    from regcarve.sources import layout

    name = "docker/registry/v2/" + "/".join(pieces) + ("/" if slash else "")
    fast = classify(name)
    saved = layout._COMMON
    layout._COMMON = re.compile("(?!)")  # matches nothing: the general rules alone
    try:
        general = classify(name)
    finally:
        layout._COMMON = saved
    assert fast == general


def test_common_paths_are_recognized():
    base = "docker/registry/v2/repositories/team/app"
    cases = {
        f"{base}/_manifests/tags/v1/current/link": (EntryKind.TAG_CURRENT, "team/app", "v1", ""),
        f"{base}/_manifests/tags/v1/index/sha256/{HEX}/link": (EntryKind.TAG_INDEX, "team/app", "v1", DIGEST),
        f"{base}/_manifests/revisions/sha256/{HEX}/link": (EntryKind.REVISION_LINK, "team/app", "", DIGEST),
        f"{base}/_layers/sha256/{HEX}/link": (EntryKind.LAYER_LINK, "team/app", "", DIGEST),
        f"docker/registry/v2/blobs/sha256/aa/{HEX}/data": (EntryKind.BLOB_DATA, "", "", DIGEST),
    }
    for name, want in cases.items():
        e = classify(name)
        assert (e.kind, e.repository, e.tag, e.digest) == want
