"""What a fault may never leave behind: checks over an output folder and the folder around it."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

HEX = re.compile(r"[a-f0-9]{64}")
VERSION = b"Directory Transport Version: 1.1\n"
TEMP = re.compile(r"\..*\.tmp")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bad_files(out: Path) -> list[str]:
    """Every file under OUT that breaks a promise: bytes under a digest name that do not hash to it,
    a temporary file left over, a symlink, or a `dir:` image whose manifest names a file it lacks."""
    bad = []
    for root, dirs, files in os.walk(out):
        for name in dirs + files:
            p = Path(root) / name
            if p.is_symlink():
                bad.append(f"symlink {p}")
        for name in files:
            p = Path(root) / name
            if p.is_symlink():
                continue
            if TEMP.fullmatch(name):
                bad.append(f"temporary file {p}")
            elif HEX.fullmatch(name) and _sha(p) != name:
                bad.append(f"{p} does not hash to its name")
            elif name.endswith(".manifest.json") and HEX.fullmatch(name[:-14]) and _sha(p) != name[:-14]:
                bad.append(f"{p} does not hash to its name")
            elif name == "version" and p.read_bytes() != VERSION:
                bad.append(f"{p} is not a dir: version file")
            elif name == "manifest.json" and ".regcarve" not in p.parts:
                bad += _incomplete_dir_image(p)
            elif name == "index.json" and ".regcarve" not in p.parts:
                bad += _incomplete_oci_layout(p)
    return bad


def _incomplete_oci_layout(index: Path) -> list[str]:
    """An OCI layout whose index.json is not JSON, or names a blob (or a blob of a blob) it lacks."""
    folder = index.parent
    try:
        todo = list(json.loads(index.read_bytes())["manifests"])
    except (ValueError, KeyError, TypeError):
        return [f"{index} is not an OCI index"]
    if not (folder / "oci-layout").is_file():
        return [f"{folder} has index.json but no oci-layout"]
    missing = []
    while todo:
        d = todo.pop()
        blob = folder / "blobs" / "sha256" / d["digest"][7:]
        if not blob.is_file():
            if not d.get("urls"):
                missing.append(f"{folder} lacks {d['digest']}")
            continue
        if "manifest" in d["mediaType"] or "index" in d["mediaType"]:
            doc = json.loads(blob.read_bytes())
            todo += [x for x in [doc.get("config")] + doc.get("layers", []) + doc.get("manifests", []) if x]
    return missing


def _incomplete_dir_image(manifest: Path) -> list[str]:
    folder = manifest.parent
    try:
        doc = json.loads(manifest.read_bytes())
    except ValueError:
        return [f"{manifest} is not JSON"]
    if not (folder / "version").exists():
        return [f"{folder} has manifest.json but no version"]
    wanted = [d for d in [doc.get("config")] + doc.get("layers", []) if d and not d.get("urls")]
    wanted = [d["digest"][7:] for d in wanted]
    wanted += [d["digest"][7:] + ".manifest.json" for d in doc.get("manifests", [])]
    wanted += [layer["blobSum"][7:] for layer in doc.get("fsLayers", [])]
    return [f"{folder} lacks {name}" for name in wanted if not (folder / name).is_file()]


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int, bytes | str]]:
    """Every path below root (but not below `skip`): kind, size and content (link target)."""
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for dirpath, dirs, files in os.walk(root):
        if skip is not None and Path(dirpath) == skip:
            dirs[:] = []
            continue
        for name in dirs + files:
            p = Path(dirpath) / name
            if skip is not None and p == skip:
                continue
            st = p.lstat()
            if p.is_symlink():
                content: bytes | str = os.readlink(p)
            elif p.is_file():
                content = p.read_bytes()
            else:
                content = b""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, content)
    return out


def image_dirs(out: Path) -> dict[str, Path]:
    """`repo:tag` → folder, for every complete `dir:` image under OUT (one that has manifest.json)."""
    found = {}
    for manifest in out.rglob("manifest.json"):
        if ".regcarve" not in manifest.parts:
            found[str(manifest.parent.relative_to(out))] = manifest.parent
    return found


def store_digests(out: Path) -> set[str]:
    folder = out / ".regcarve" / "blobs" / "sha256"
    return {"sha256:" + p.name for p in folder.iterdir()} if folder.is_dir() else set()
