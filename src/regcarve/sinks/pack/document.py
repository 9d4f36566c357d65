"""What pack.json says (schema regcarve.pack/v1) and what the summary of a pack run says."""

from __future__ import annotations

from regcarve import __version__
from regcarve.sinks.base import Result, Status
from regcarve.sinks.pack.index import SCHEMA, SHA256SUMS
from regcarve.sinks.pack.options import PackedRun
from regcarve.sinks.pack.plan import ImageNeeds


def _image_json(needs: ImageNeeds) -> dict:
    image = needs.image
    out = {"ref": image.ref, "digest": image.manifest.digest, "media_type": image.manifest.media_type,
           "size": sum(needs.shipped.values()) + sum(d.size for d in image.blobs if d.digest in needs.expected)}
    if image.platform_choice:
        out["platform"] = image.platform_choice
        out["source_digest"] = image.source_digest
    return out


def _users(sink: PackedRun) -> dict[str, list[str]]:
    """Each expected blob → the repositories of this delivery whose images use it: where a registry that
    got the earlier delivery (and this one's other volumes) holds it, for a receiving push to mount from."""
    users: dict[str, set[str]] = {}
    for volume in sink.plan.volumes:
        for needs in volume.images:
            for d in needs.expected:
                users.setdefault(d, set()).add(needs.image.repository)
    return {d: sorted(repos) for d, repos in users.items()}


def pack_document(sink: PackedRun, results: list[Result]) -> dict:
    options, plan = sink.options, sink.plan
    users = _users(sink)
    volumes = []
    for volume in plan.volumes:
        if volume.number not in sink.written:
            continue
        done = sink.written[volume.number]
        volumes.append({
            "file": sink.file_name(volume), "size": done.size, "sha256": done.sha256, "tar_bytes": done.tar_bytes,
            "plan": done.plan,
            **({"parts": [p.json() for p in done.parts]} if done.parts else {}),
            "images": [_image_json(n) for n in volume.images],
            "blobs": {"count": len(volume.blobs), "bytes": sum(volume.blobs.values())},
            "stored": list(volume.blobs),
            "expects": [{"digest": d, "from": src, "repositories": users[d]} for d, src in sorted(volume.expected.items())],
        })
    return {
        "schema": SCHEMA,
        "created_by": f"regcarve {__version__}",
        "name": options.name,
        "volume_size": options.volume_size,
        "compression": options.compression,
        "source": options.source,
        "since": list(options.since),
        "volumes": volumes,
        "bytes_stored_more_than_once": plan.duplicated_bytes,
        "not_packed": [{"ref": r.ref, "status": r.status.value, "reason": r.reason}
                       for r in results if not r.status.done],
        "checksums": SHA256SUMS,
    }


def summary_lines(sink: PackedRun, results: list[Result]) -> list[str]:
    packed = sum(1 for r in results if r.status is Status.WRITTEN)
    plan = sink.plan
    lines = [f"{packed} image(s) packed into {len(sink.written)} volume(s) in {sink.media} "
             f"(volume size {sink.options.volume_size:,} bytes, {sink.options.compression}); "
             f"{plan.duplicated_bytes:,} bytes of blobs stored in more than one volume"]
    for volume in plan.volumes:
        if volume.number in sink.written:
            done = sink.written[volume.number]
            expects = f", expects {len(volume.expected)} blob(s) from earlier deliveries" if volume.expected else ""
            cut = f", cut into {len(done.parts)} parts (.part000 …)" if done.parts else ""
            lines.append(f"  {sink.file_name(volume)}: {done.size:,} bytes{cut}, {len(volume.images)} image(s){expects}")
    if sink.reused:
        lines.append(f"{sink.reused} volume(s) finished by an earlier run were checked and kept")
    if sink.written:
        lines.append(f"check on arrival: regcarve verify {sink.media}   (or: cd {sink.media} && sha256sum -c {SHA256SUMS})")
    return lines
