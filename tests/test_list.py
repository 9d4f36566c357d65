"""`regcarve list` against what the live registry reported when the fixtures were made."""

import json
from dataclasses import replace

from conftest import GC_ARCHIVE, MAIN_ARCHIVE, regcarve


def inventory(archive, *extra):
    run = regcarve("list", "--json", "-q", *extra, archive)
    return run, json.loads(run.stdout)


def test_every_tag_digest_and_media_type_match_the_registry(truth):
    run, inv = inventory(MAIN_ARCHIVE)
    got = {t["ref"]: t for t in inv["tags"]}
    want = {f"{t['repo']}:{t['tag']}": t for t in truth["tags"]}
    assert set(got) == set(want)
    for ref, t in want.items():
        g = got[ref]
        assert g["digest"] == t["digest"], ref
        if t["kind"] != "schema1":  # the registry serves schema1 signed (prettyjws); storage holds the payload
            assert g["media_type"] == t["media_type"], ref
        assert g["status"] == "ok", (ref, g["problems"])


def test_kinds_platforms_and_children(truth):
    _, inv = inventory(MAIN_ARCHIVE)
    got = {t["ref"]: t for t in inv["tags"]}
    assert got["legacy/old:s1"]["kind"] == "schema1"
    assert got["charts/mychart:0.1.0"]["kind"] == "artifact"
    assert got["team/multi:latest"]["kind"] == "index"
    assert sorted(got["team/multi:latest"]["platforms"]) == ["linux/amd64", "linux/arm64/v8"]
    assert sorted(got["team/oci-multi:1"]["platforms"]) == ["linux/amd64", "linux/arm64/v8"]  # attestations not counted
    assert got["team/win:1"]["foreign_layers"] is True and got["team/win:1"]["platforms"] == ["windows/amd64"]
    nested = got["team/nested:1"]["manifest"]
    assert nested["children"][0]["kind"] == "index" and nested["children"][0]["children"]
    for t in truth["tags"]:
        if t["kind"] == "index":
            children = got[f"{t['repo']}:{t['tag']}"]["manifest"]["children"]
            assert [c["digest"] for c in children] == [c["digest"] for c in t["children"]]
        if t["kind"] == "image" and t.get("config"):
            m = got[f"{t['repo']}:{t['tag']}"]["manifest"]
            assert m["config"]["digest"] == t["config"]["digest"]
            assert [x["digest"] for x in m["layers"]] == [x["digest"] for x in t["layers"]]


def test_untagged_and_uploads(truth):
    _, inv = inventory(MAIN_ARCHIVE, "--untagged")
    untagged = {u["digest"] for u in inv["untagged"]}
    assert {u["digest"] for u in truth["untagged"]} <= untagged
    web = next(r for r in inv["repositories"] if r["name"] == "team/web")
    assert web["uploads"] >= 1


def test_table_output_and_exit_code(truth):
    run = regcarve("list", "-q", MAIN_ARCHIVE)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("REFERENCE")
    assert len(lines) == 1 + len(truth["tags"])
    assert any(l.startswith("team/multi:latest ") and "linux/arm64/v8" in l for l in lines)
    # the fixture holds an empty revision dir, an unfinished upload and an orphan blob: warnings at most
    inv = json.loads(regcarve("list", "--json", "-q", MAIN_ARCHIVE).stdout)
    assert inv["problems"] and {p["severity"] for p in inv["problems"]} == {"warning"}
    assert run.code == 0


def test_gc_damaged_index_children_are_reported(gc_truth):
    run, inv = inventory(GC_ARCHIVE)
    assert run.code == 1
    got = {t["ref"]: t for t in inv["tags"]}
    assert got["gc/intact:1"]["status"] == "ok"
    missing = {m["digest"] for m in gc_truth["gc"]["missing_children"]}
    broken = [t for t in inv["tags"] if t["kind"] == "index"]
    assert broken and all(t["status"] == "broken" for t in broken)
    reported = {p["subject"] for p in inv["problems"] if p["code"] in ("missing-child", "missing-blob")}
    codes = {p["code"] for p in inv["problems"]}
    assert "dangling-layer-link" in codes
    # every missing child is named, either as absent or through its absent layers
    for t in broken:
        listed = {m["digest"] for m in t["manifest"]["missing_children"]} | {
            c["digest"] for c in t["manifest"]["children"]}
        assert listed & missing
    assert reported


def test_tags_naming_one_manifest_each_get_their_own_row(tmp_path):
    """The table makes a manifest's columns once for all the tags naming it: a tag that is an attachment
    (a cosign tag), the same digest in another repository, and a broken image beside them keep their own."""
    from storagetar import Storage

    st = Storage()
    image = st.image("app", "a", seed=1)
    st.tag("app", "b", image.digest)
    st.push(replace(image, repo="other", tag="x"))
    sig = st.image("app", f"sha256-{image.digest[7:]}.sig", seed=2)
    st.tag("app", "plain", sig.digest)  # the signature's manifest under an ordinary name too
    broken = st.image("app", "c", seed=3)
    st.drop_blob(broken.layer_digests[0])
    archive = tmp_path / "s.tar"
    archive.write_bytes(st.tar())
    run = regcarve("list", "-q", archive)
    assert run.code == 1, run.stderr
    header, *lines = run.stdout.splitlines()
    attached, status = header.index("ATTACHED"), header.index("STATUS")
    rows = {line.split()[0]: (line[attached:status].strip(), line[status:]) for line in lines}
    assert rows == {
        "app:a": ("sig 1", "ok"), "app:b": ("sig 1", "ok"),
        f"app:sha256-{image.digest[7:]}.sig": ("sig of a", "ok"), "app:plain": ("-", "ok"),
        "app:c": ("-", "broken: missing-blob"), "other:x": ("-", "ok")}
