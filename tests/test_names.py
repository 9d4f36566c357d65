"""The reference grammar: repository names, tags, registry prefixes."""

import re

import pytest
from hypothesis import given, strategies as st

from regcarve.model.names import repository_name_problem, split_registry_prefix, tag_problem
from regcarve.sinks.dockerarchive import check_repo_prefix


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


def test_repo_prefix_grammar():
    assert check_repo_prefix("harbor.local:5000/proj/sub/") == "harbor.local:5000/proj/sub"
    assert check_repo_prefix("localhost/x") == "localhost/x"
    for bad in ("myproj", "harbor.local/Proj", "harbor.local//x", "-x.io"):
        with pytest.raises(ValueError):
            check_repo_prefix(bad)


@pytest.mark.parametrize("text,host,path", [("h", "h", ""), ("h:5000", "h:5000", ""), ("h.io/a/b", "h.io", "a/b"),
                                            ("[::1]:5000/x", "[::1]:5000", "x"), ("127.0.0.1:1/lib", "127.0.0.1:1", "lib")])
def test_registry_prefix_splits_host_and_path(text, host, path):
    assert split_registry_prefix(text) == (host, path)


@pytest.mark.parametrize("text", ["", "/x", "h/", "h//x", "h/X", "h:port", "h/a b", "https://h"])
def test_registry_prefix_refuses_what_is_not_one(text):
    with pytest.raises(ValueError):
        split_registry_prefix(text)
