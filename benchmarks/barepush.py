#!/usr/bin/env python3
"""The registry's own floor for a push: PUT every tag's manifest, nothing else, with a bare client.

    python3 benchmarks/barepush.py OUT HOST:PORT [--jobs N]

OUT is what `regcarve convert --format dir` wrote; the registry at HOST:PORT (plain HTTP) must
already hold every blob and child manifest of it, and none of its tags (push.py gets there by
syncing OUT and then removing each repository's `_manifests/tags` from the registry's storage).
Then this sends one `PUT /v2/<repo>/manifests/<tag>` per tag from N threads over keep-alive
connections (the standard library's http.client): no HEAD, no blob, no token, no retry. The time
it takes is what the registry needs to take the tags at all; no client can push them faster.
It is a lower bound: the manifests' own blobs are there already, so the registry skips writing them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import sys
import threading
from pathlib import Path

SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def media_type(body: bytes) -> str:
    doc = json.loads(body)
    if doc.get("mediaType"):
        return doc["mediaType"]
    if doc.get("schemaVersion") == 1:
        return SCHEMA1_SIGNED
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def tag_manifests(out: Path) -> list[tuple[str, str, bytes]]:
    found = []
    for manifest in sorted(out.rglob("manifest.json")):
        repo, tag = manifest.parent.relative_to(out).as_posix().rsplit(":", 1)
        found.append((repo, tag, manifest.read_bytes()))
    return found


def put_all(host: str, work: list[tuple[str, str, bytes]], jobs: int) -> list[str]:
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for item in work:
        todo.put(item)
    failures: list[str] = []

    def worker() -> None:
        connection = http.client.HTTPConnection(host, timeout=60)
        while True:
            try:
                repo, tag, body = todo.get_nowait()
            except queue.Empty:
                return
            connection.request("PUT", f"/v2/{repo}/manifests/{tag}", body=body,
                               headers={"Content-Type": media_type(body)})
            answer = connection.getresponse()
            answer.read()
            if answer.status != 201:
                failures.append(f"{repo}:{tag}: HTTP {answer.status}")

    threads = [threading.Thread(target=worker) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("host")
    ap.add_argument("--jobs", type=int, default=16)
    args = ap.parse_args(argv)
    work = tag_manifests(args.out)
    failures = put_all(args.host, work, args.jobs)
    print(f"{len(work) - len(failures)} of {len(work)} manifest(s) put", file=sys.stderr)
    for failure in failures[:10]:
        print(failure, file=sys.stderr)
    return 1 if failures or not work else 0


if __name__ == "__main__":
    sys.exit(main())
