"""An OUT that `regcarve convert --format dir` wrote, read back as a source: its images and its verified store.

Every `<repository path>:<tag>/manifest.json` under OUT is a tag; its blobs, and every other blob of the
run, are in `OUT/.regcarve/blobs/sha256/`, where they were stored only after their sha256 matched. So
nothing is hashed again here (a registry checks every digest it is sent anyway): the store's sizes are
taken from the files, and the small JSON ones (manifests, configs) are read. A schema1 image's
`manifest.json` is the signed document; the tag names its payload, which the store holds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from regcarve.blobs.source import BlobSource
from regcarve.blobs.store import BlobStore, StoreBlobs
from regcarve.model import schema1
from regcarve.model.inventory import BlobRecord, Inventory, RepositoryRecord
from regcarve.model.manifests import JSON_LIMIT, parse_manifest
from regcarve.model.names import SHA256_HEX, repository_name_problem, tag_problem
from regcarve.sources.base import InputError, Progress

STATE = Path(".regcarve") / "blobs" / "sha256"


def is_convert_out(path: str) -> bool:
    return os.path.isdir(path) and os.path.isdir(os.path.join(path, STATE))


class ConvertOutSource:
    total_bytes = None
    needs_store = False  # its verified blobs are in its own store already

    def __init__(self, path: str):
        self.root = Path(path)
        self.store_dir = self.root / STATE

    def read(self, store: BlobStore | None, progress: Progress | None = None) -> Inventory:
        inv = Inventory()
        inv.input.compression = "convert-dir"
        inv.input.prefixes.add("")
        self._blobs(inv)
        for folder, manifest in self._images():
            rel = str(folder.relative_to(self.root))
            repo, _, tag = rel.rpartition(":")
            why = repository_name_problem(repo) or tag_problem(tag)
            if why is not None:
                inv.problem("invalid-repository-name" if repository_name_problem(repo) else "invalid-tag",
                            f"{rel}: {why}; skipped", subject=rel)
                continue
            digest = self._digest(manifest)
            record = inv.repository(repo)
            record.has_manifests = True
            record.tags[tag] = digest
            record.revisions.add(digest)
            _link(inv, record, digest)
            inv.input.members += 1
        if not inv.input.members and not inv.blobs:
            raise InputError(f"{self.root}: holds no image that regcarve convert --format dir wrote")
        return inv

    def _blobs(self, inv: Inventory) -> None:
        with os.scandir(self.store_dir) as entries:
            for entry in entries:
                if not SHA256_HEX.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                digest, size = "sha256:" + entry.name, entry.stat(follow_symlinks=False).st_size
                inv.blobs[digest] = BlobRecord(digest, size, True, member=entry.path)
                inv.input.bytes += size
                if size <= JSON_LIMIT:
                    with open(entry.path, "rb") as f:
                        head = f.read(1)
                        if head in (b"{", b"["):
                            inv.json_blobs[digest] = head + f.read()

    def _images(self):
        for dirpath, dirnames, filenames in os.walk(self.root):
            if dirpath == str(self.root) and ".regcarve" in dirnames:
                dirnames.remove(".regcarve")
            if "manifest.json" in filenames and ":" in os.path.basename(dirpath):
                dirnames.clear()
                yield Path(dirpath), Path(dirpath) / "manifest.json"

    @staticmethod
    def _digest(manifest: Path) -> str:
        data = manifest.read_bytes()
        if b'"signatures"' in data and schema1.is_schema1(data):
            return schema1.payload_digest(data)
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def blobs(self, inventory: Inventory, store: BlobStore | None) -> BlobSource:
        return StoreBlobs(self.store_dir, inventory)

    def close(self) -> None:
        pass


def _link(inv: Inventory, record: RepositoryRecord, digest: str, depth: int = 0) -> None:
    """What a manifest references, as the registry links it in the repository: its blobs as layer links,
    an index's children as revisions (the store holds what `convert` kept, so nothing is orphaned)."""
    raw = inv.json_blobs.get(digest)
    if raw is None or depth > 8:
        return
    try:
        parsed = parse_manifest(raw)
    except (ValueError, RecursionError):
        return  # the catalog says why
    own = ([parsed.config] if parsed.config else []) + parsed.layers
    record.layer_links.update(d.digest for d in own if not (d.is_foreign and d.digest not in inv.blobs))
    for child in parsed.manifests:
        record.revisions.add(child.digest)
        _link(inv, record, child.digest, depth + 1)
