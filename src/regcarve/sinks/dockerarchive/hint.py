"""The summary's lines for docker-archives: how to load them into Docker, and push them without it."""

from __future__ import annotations

import shlex
from pathlib import Path

from regcarve.sinks.base import Options, Result, Status
from regcarve.sinks.dockerarchive.image import archive_name


def hint_lines(results: list[Result], out: Path, options: Options, single: Path | None) -> list[str]:
    """How to load and push what was written; `single`: the --single-file archive."""
    written = [r for r in results if r.status is Status.WRITTEN]
    if not written:
        return []
    prefix = options.repo_prefix.rstrip("/")
    first = written[0].ref
    repository, tag = first.rsplit(":", 1)
    loaded = f"{archive_name(repository, prefix)}:{tag}"  # the name the archive gives it
    lines: list[str] = []
    if single is not None:
        f = shlex.quote(str(single))
        lines += [
            "Load every image into Docker:",
            f"  docker load -i {f}",
            "Push one image without Docker (the archive holds several, so name it):",
            f"  skopeo copy docker-archive:{f}:{loaded} docker://<registry>/{first}",
        ]
    else:
        q = shlex.quote(str(out))
        one = shlex.quote(str(out / written[0].path))
        lines += [
            "Load one image into Docker:",
            f"  docker load -i {one}",
            "Load every image (bash):",
            f"  find {q} -path '*/_tags/*.tar' -exec docker load -i {{}} \\;",
            "Push one image without Docker:",
            f"  skopeo copy docker-archive:{one} docker://<registry>/{first}",
            "Push every image (bash; run from anywhere):",
            f"  (cd {q} && find . -path ./.regcarve -prune -o -path '*/_tags/*.tar' -print | sed 's|^\\./||' "
            "| while read -r f; do r=${f%.tar}; skopeo copy \"docker-archive:$f\" "
            "\"docker://<registry>/${r/\\/_tags\\//:}\"; done)",
        ]
        if ":" in str(out):
            lines.append("warning: OUT contains ':', which skopeo takes as the end of a docker-archive path; "
                         "use a path without one")
    if prefix:
        lines.append(f"after `docker load`, `docker push {loaded}` pushes to {prefix} (--repo-prefix)")
    lines.append("note: layers are stored uncompressed, so a push recompresses them: layer and manifest digests "
                 "differ from the source registry's (use --format dir to keep them)" if not options.keep_compressed
                 else "note: pushed manifests are regenerated, so their digests differ from the source registry's "
                 "(use --format dir to keep them)")
    return lines
