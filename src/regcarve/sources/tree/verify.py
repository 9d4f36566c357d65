"""What the walk's blob files are worth: every one hashed (the default), or, with `--verify size`, only the
manifests and configs hashed and every other blob checked for presence and for the size its descriptors give.

The size check trusts content addressing: a blob of the right size at the right path is taken for the
right bytes. It still catches what goes wrong in practice with whole storages — a blob cut short by a
full disk or an interrupted copy, an empty file, a missing one — but not a byte flipped in place.
"""

from __future__ import annotations

from typing import Iterable

from regcarve.blobs.files import BlobFile, FileHash, hash_files
from regcarve.model.catalog import MAX_INDEX_DEPTH
from regcarve.model.inventory import BlobRecord, Inventory
from regcarve.model.manifests import Descriptor, parse_manifest
from regcarve.sources.base import Progress
from regcarve.sources.collect import Collector


def record_hashes(facts: Collector, results: Iterable[FileHash]) -> None:
    """Each hashed file into the inventory: verified when its bytes match the digest its path claims."""
    inv = facts.inv
    for result in results:
        blob, size = result.blob, result.blob.identity.size
        verified = result.actual == blob.digest
        record = BlobRecord(blob.digest, size, verified, "" if verified else result.actual, blob.shown)
        if result.error:
            record.unusable = f"cannot be used: {blob.shown} {result.error}"
        else:
            inv.input.bytes += size
        facts.blob(record, result.json)


def verify_all(facts: Collector, blobs: list[BlobFile], progress: Progress | None) -> None:
    record_hashes(facts, hash_files(blobs, progress=progress))


def verify_sizes(facts: Collector, blobs: list[BlobFile], progress: Progress | None) -> None:
    """Presence and size for every blob; the manifests and configs (which are read anyway) hashed."""
    inv = facts.inv
    inv.input.verification = "size"
    files = {b.digest: b for b in blobs}
    for blob in blobs:
        inv.blobs[blob.digest] = BlobRecord(blob.digest, blob.identity.size, True, member=blob.shown, hashed=False)
    wanted, read = _manifest_digests(inv), set()
    sized: list[tuple[str, Descriptor]] = []  # (manifest, descriptor): every descriptor met, with its size
    for _ in range(MAX_INDEX_DEPTH + 2):  # tag → index → … → manifest → config
        batch = [files[d] for d in sorted(wanted - read) if d in files]
        if not batch:
            break
        read |= wanted
        record_hashes(facts, hash_files(batch, progress=progress))
        wanted = set()
        for blob in batch:
            to_read, other = _descriptors(inv.json_blobs.get(blob.digest) if inv.has_blob(blob.digest) else None)
            sized += [(blob.digest, d) for d in to_read + other]
            wanted |= {d.digest for d in to_read}
    _check_sizes(inv, sized)


def _manifest_digests(inv: Inventory) -> set[str]:
    found: set[str] = set()
    for repo in inv.repositories.values():
        found |= repo.revisions | set(repo.tags.values())
        for signatures in repo.signatures.values():
            found |= signatures
    found.discard("")
    return found


def _descriptors(raw: bytes | None) -> tuple[list[Descriptor], list[Descriptor]]:
    """What a manifest references: what is read in turn (its config, an index's children), and its layers."""
    if raw is None:
        return [], []
    try:
        parsed = parse_manifest(raw)
    except (ValueError, RecursionError):
        return [], []  # the catalog says why
    return ([parsed.config] if parsed.config else []) + list(parsed.manifests), list(parsed.layers)


def _check_sizes(inv: Inventory, sized: list[tuple[str, Descriptor]]) -> None:
    for manifest, d in sized:
        record = inv.blobs.get(d.digest)
        if record is None or not record.verified or d.size < 0 or record.size == d.size:
            continue
        record.verified = False
        record.unusable = (f"is {record.size} bytes in the storage, but manifest {manifest} gives its size as "
                           f"{d.size} (blobs not hashed: --verify size)")
