"""The storage layout parser and the name grammar."""

import re

import pytest
from hypothesis import given, strategies as st

from regcarve.sources.layout import (
    EntryKind,
    LinkError,
    classify,
    parse_link,
    repository_name_problem,
    tag_problem,
)

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


@pytest.mark.parametrize("name", ["a", "team/web", "a/b/c/d", "my-app", "my__app", "a.b", "a_b", "x0/y1-2"])
def test_valid_names(name):
    assert repository_name_problem(name) is None


@pytest.mark.parametrize("name", ["", "..", "a/../b", "/a", "a//b", "A", "a/B", "-a", "a-", "a b", "a:5000/b",
                                  "a___b", "." , "a/.", "x" * 256, "a/\u00e9"])
def test_invalid_names(name):
    assert repository_name_problem(name) is not None


@pytest.mark.parametrize("tag,ok", [("v1", True), ("_x", True), ("1.0-rc.1", True), ("a" * 128, True),
                                    ("a" * 129, False), (".x", False), ("-x", False), ("a/b", False),
                                    ("a:b", False), ("..", False), ("", False), ("é", False)])
def test_tags(tag, ok):
    assert (tag_problem(tag) is None) == ok


_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*")


@given(st.text(min_size=0, max_size=80))
def test_valid_names_never_escape(name):
    """Whatever passes the grammar is a safe relative path: no '..', no absolute, no empty part."""
    if repository_name_problem(name) is None:
        parts = name.split("/")
        assert all(_COMPONENT.fullmatch(p) for p in parts)
        assert not name.startswith("/") and ".." not in parts and "" not in parts and ":" not in name


@given(st.text(min_size=1, max_size=40))
def test_valid_tags_are_single_safe_components(tag):
    if tag_problem(tag) is None:
        assert "/" not in tag and tag not in (".", "..") and not tag.startswith((".", "-")) and "\0" not in tag


@given(st.lists(st.text(st.characters(blacklist_characters="/\0"), min_size=1, max_size=12), min_size=1, max_size=6))
def test_classify_never_crashes(parts):
    name = "docker/registry/v2/repositories/" + "/".join(parts)
    e = classify(name)
    assert e is not None
