"""skopeo `dir:` trees: OUT/<repository path>:<tag>/ with manifest.json, one file per blob, and version.

`manifest.json` is placed last: a folder is an image to `skopeo sync --src dir` only once it has one,
so an interrupted run never leaves a half image that sync would pick up.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from regcarve.model.names import hex_of
from regcarve.safefiles import atomic_write, is_temp, remove_path
from regcarve.sinks import base
from regcarve.sinks.base import ImageFailed, ImageOut, Result, Status
from regcarve.sinks.fsout import FolderSink

VERSION = b"Directory Transport Version: 1.1\n"
_OURS = re.compile(r"[a-f0-9]{64}(\.manifest\.json)?|manifest\.json|version")


def image_files(image: ImageOut) -> dict[str, str]:
    """File name → blob digest: every file of the image except manifest.json.

    A foreign layer whose blob is absent is left out: skopeo skips foreign layers on push.
    """
    files = {hex_of(m.digest) + ".manifest.json": m.digest for m in image.children}
    files.update((hex_of(d.digest), d.digest) for d in image.blobs)
    return files


class DirSink(FolderSink):
    format = "dir"
    capabilities = base.Capabilities(refuses={base.Refusal.NESTED_INDEX: base.SKOPEO_NESTED_INDEX})

    def relpath(self, repository: str, tag: str) -> str:
        return f"{repository}:{tag}"

    def write(self, image: ImageOut) -> None:
        folder, fresh = self.out.make_folder(self.relpath(image.repository, image.tag))
        wanted = image_files(image)
        if not fresh:
            self._clear(Path(folder), wanted)
        place, local_path = self.out.placer.place, self.blobs.local_path
        folder += os.sep  # every name below is a plain file name: joined as strings, no Path per file
        for name, digest in wanted.items():
            place(local_path(digest), folder + name, fresh)
        place(self.out.shared_file("version", VERSION), folder + "version", fresh)
        manifest = image.manifest
        if manifest.stored:
            place(local_path(manifest.digest), folder + "manifest.json", fresh)
        else:
            atomic_write(Path(folder, "manifest.json"), manifest.raw)

    def _clear(self, dest: Path, wanted: dict[str, str]) -> None:
        """Make the folder hold nothing but what this run writes; refuse foreign files without --force."""
        existing = os.listdir(dest)
        foreign = [n for n in existing if not (_OURS.fullmatch(n) or is_temp(n))]
        if foreign and not self.options.force:
            raise ImageFailed(f"{dest} holds files regcarve did not write ({foreign[0]}, …); use --force to replace")
        remove_path(dest / "manifest.json")  # first: the folder stops being an image until it is complete
        for name in existing:
            if name not in wanted:
                remove_path(dest / name)

    def prepare(self, images: list[ImageOut]) -> None:
        super().prepare(images)
        # only the few images that need something: a set per tag would be most of a large run's memory
        self._needs = {self.relpath(i.repository, i.tag): n for i in images if (n := i.registry_needs())}

    def hint(self, results: list[Result]) -> list[str]:
        written = [r for r in results if r.status is Status.WRITTEN]
        if not written:
            return []
        out = str(self.out.root)
        repositories = sorted({r.path.rsplit(":", 1)[0] for r in written})
        projects = sorted({name.split("/")[0] for name in repositories if "/" in name})
        first = f" (create these Harbor projects first: {', '.join(projects)})" if projects else ""
        changed = sum(1 for r in written if r.path in self.skopeo_changes)
        unchanged = f"digests unchanged (but for the {changed} tag(s) named below)" if changed else "digests unchanged"
        lines = [f"Push every image, {unchanged}{first}:",
                 f"  skopeo sync --src dir --dest docker --scoped --all --keep-going {out} <registry>[/prefix]"]
        written_paths = {r.path for r in written}
        lines += needs_lines({path: n for path, n in self._needs.items() if path in written_paths})
        lines += self.skopeo_digest_warning(written, f"regcarve push {shlex.quote(out)} <registry>[/prefix] {{images}}",
                                            out_names=True)
        single = [name for name in repositories if "/" not in name]
        if single:
            lines.append("warning: these repositories have a single name component, and Harbor keeps every repository "
                         "in a project: convert again with --default-project library to write them under one: "
                         + ", ".join(single))
        lines.append(f"note: give OUT as '{out}' exactly — with --scoped, a leading './' leaks into the pushed names")
        return lines


REGISTRY_SETTINGS = {
    "schema1": "schema1 manifests — Distribution 2.x: compatibility.schema1.enabled: true (Harbor 2.x has it); "
               "Distribution v3 (registry:3) takes none",
    "foreign-urls": "layers with foreign URLs — Distribution: validation.manifests.urls.allow: ['^https?://']",
}


def needs_lines(needs: dict[str, set[str]]) -> list[str]:
    """What the destination must allow for the images written (`path: needs`), one line a setting;
    `--keep-going` lets every other image go in when it does not."""
    lines = []
    for need, setting in REGISTRY_SETTINGS.items():
        images = sorted(path for path, wanted in needs.items() if need in wanted)
        if images:
            shown = ", ".join(images[:3]) + (f" and {len(images) - 3} more" if len(images) > 3 else "")
            lines.append(f"the registry must take {setting} ({shown})")
    if lines:
        lines.append("(with --keep-going, an image the registry refuses is named and the others still go in)")
    return lines
