"""docker-archive tarballs (`docker save` format): one per tag at OUT/<repository path>/_tags/<tag>.tar,
or every selected image in one FILE with --single-file (each layer once, as `docker save a b c`).

An archive holds what Docker ≤ 24 and containers/image write, so every loader takes it:
`<diffID hex>.tar` per layer (uncompressed), `<config hex>.json` (the stored bytes), the legacy
`<v1 id>/{VERSION,json,layer.tar}` entries (`layer.tar` a symlink to the layer file), and then
`manifest.json` (`Config`, `RepoTags`, `Layers`) and `repositories`, last.

Each layer is decompressed once a run (see layers.py), checked against the config's diff_id, and
copied in the kernel into later archives that need it again. Archives are written under a temporary
name beside the final one and renamed only once complete.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
from pathlib import Path

from regcarve.blobs import decode
from regcarve.blobs.source import BlobSource
from regcarve.model.manifests import Platform
from regcarve.safefiles import open_temp, remove_stale_temps, replace
from regcarve.sinks.base import Capabilities, ImageFailed, ImageOut, OptionError, Options, Refusal, Result
from regcarve.sinks.dockerarchive import image as images
from regcarve.sinks.dockerarchive.archive import Archive, add_image
from regcarve.sinks.dockerarchive.files import check_single_file, inside, is_ours, missing_folders
from regcarve.sinks.dockerarchive.hint import hint_lines
from regcarve.sinks.dockerarchive.image import ARTIFACT_REASON, INDEX_REASON, SCHEMA1_REASON, ImagePlan
from regcarve.sinks.dockerarchive.layers import Finished, LayerWriter, new_layers
from regcarve.sinks.fsout import FolderSink, OutFolder, tagged_path
from regcarve.sinks.tarout import TarOut

MANIFEST_LIMIT = 1 << 20  # containers/image refuses a larger manifest.json


class DockerArchiveSink(FolderSink):
    format = "docker-archive"
    capabilities = Capabilities(
        refuses={Refusal.SCHEMA1: SCHEMA1_REASON, Refusal.INDEX: INDEX_REASON, Refusal.ARTIFACT: ARTIFACT_REASON},
        index_platforms=(Platform("linux", "amd64"),),
        keeps_store_links=False,  # archives hold copies, so the store is deleted afterwards
        attachments_refused="a docker-archive holds container images only; --format dir or oci, or regcarve push, "
                            "carry them",
    )

    def __init__(self, out: OutFolder, blobs: BlobSource, options: Options):
        super().__init__(out, blobs, options)
        self.single = Path(os.path.abspath(options.single_file)) if options.single_file is not None else None
        self._single: Archive | None = None
        self._single_tmp: Path | None = None
        self._single_failed = ""
        self._finished = Finished()  # the layers of the archives written so far
        self._ahead: decode.Ahead | None = None
        self._plans: dict[str, ImagePlan] = {}  # ref → what prepare() planned for it

    @classmethod
    def check_options(cls, options: Options, out: Path) -> Options:
        """A bad --repo-prefix or an existing --single-file, refused before the input is read."""
        prefix = options.repo_prefix
        if prefix:
            try:
                prefix = images.check_repo_prefix(prefix)
            except ValueError as e:
                raise OptionError("--repo-prefix", str(e)) from None
        single = options.single_file
        if single is not None:
            single = Path(os.path.abspath(single))
            if why := check_single_file(single, options.force, out):
                raise OptionError("--single-file", why)
        return dataclasses.replace(options, repo_prefix=prefix, single_file=single)

    def relpath(self, repository: str, tag: str) -> str:
        if self.single is not None:
            return inside(self.single, self.out.root) or str(self.single)
        return tagged_path(repository, tag) + ".tar"

    def _plan(self, image: ImageOut) -> ImagePlan:
        return images.plan_image(image, self.blobs, self.options.repo_prefix)

    def prepare(self, images_out: list[ImageOut]) -> None:
        """Start decoding, in the order the images will need them, the layers the run will decode:
        each layer's first use (later archives copy it from the first one's)."""
        layer_writer, seen, sources = LayerWriter(self.blobs, self.options.keep_compressed), set(), []
        for image in images_out:
            try:
                plan = self._plans[image.ref] = self._plan(image)
            except ImageFailed:
                continue  # write() plans it again, and says why
            for i, layer, diff_id in new_layers((), plan.layers, plan.diff_ids):
                once = diff_id if self.single is not None else layer_writer.key(layer, diff_id)
                if once in seen:
                    continue
                seen.add(once)
                try:
                    sources.append(layer_writer.source(i, layer, diff_id))
                except ImageFailed:
                    pass  # write() says why
        self._ahead = decode.Ahead(sources, decode.AHEAD_DEPTH)

    def write(self, image: ImageOut) -> None:
        plan = self._plans.pop(image.ref, None) or self._plan(image)
        if self.single is not None:
            self._write_single(plan)
        else:
            self._write_one(image, plan)

    def _write_one(self, image: ImageOut, plan: ImagePlan) -> None:
        rel = tagged_path(image.repository, image.tag) + ".tar"
        created = missing_folders(self.out.root, os.path.dirname(rel))
        final = self.out.ensure_dir(os.path.dirname(rel)) / os.path.basename(rel)
        try:
            if os.path.lexists(final) and not self.options.force and not is_ours(final):
                raise ImageFailed(f"{final} exists and was not written by regcarve; use --force to replace it")
            remove_stale_temps(final)
            self._write_archive(final, plan)
        except BaseException:
            for d in created:  # deepest first; only folders this image made, and only while empty
                try:
                    os.rmdir(d)
                except OSError:
                    break
            raise

    def _write_archive(self, final: Path, plan: ImagePlan) -> None:
        fd, tmp = open_temp(final)
        tar = TarOut(fd, tmp)
        held = -1  # for later archives to copy this one's layers from
        try:
            archive = Archive(tar)
            add_image(archive, plan, self.blobs, self.options.keep_compressed, self._finished, self._ahead)
            if archive.decoded:
                try:
                    held = os.dup(fd)
                except OSError:  # out of descriptors: later archives decode these layers again
                    pass
            archive.finish()
            replace(tmp, final)
        except BaseException:
            if held >= 0:
                os.close(held)
            tar.discard()
            tmp.unlink(missing_ok=True)
            raise
        if held >= 0:
            self._finished.add(held, archive.decoded)

    # --- --single-file ------------------------------------------------------------------------
    def _write_single(self, plan: ImagePlan) -> None:
        if self._single_failed:
            raise ImageFailed(self._single_failed)
        if self._single is None:
            self._open_single()
        archive = self._single
        assert archive is not None
        snap = archive.snapshot()
        try:
            add_image(archive, plan, self.blobs, self.options.keep_compressed, ahead=self._ahead)
        except ImageFailed:
            archive.restore(snap)
            raise
        except BaseException:
            self._discard_single()
            raise

    def _open_single(self) -> None:
        final = self.single
        assert final is not None
        why = check_single_file(final, self.options.force, self.out.root)
        if why:
            self._single_failed = why
            raise ImageFailed(why)
        rel = inside(final.parent, self.out.root)
        if rel and rel != ".":
            self.out.ensure_dir(rel)
        fd, tmp = open_temp(final)
        self._single, self._single_tmp = Archive(TarOut(fd, tmp)), tmp
        atexit.register(self._discard_single)  # the run may end between images (interrupt, broken pipe)

    def _discard_single(self) -> None:
        if self._single is not None:
            self._single.tar.discard()
            assert self._single_tmp is not None
            self._single_tmp.unlink(missing_ok=True)
        self._single = self._single_tmp = None

    def finish(self, results: list[Result]) -> None:
        self._finished.close()
        if self._ahead is not None:
            self._ahead.close()
        if self.single is None or self._single is None:
            return
        archive, final = self._single, self.single
        if not archive.items:
            self._discard_single()
            self.notes.append(f"no image written: {final} was not created")
            return
        try:
            archive.finish()
            assert self._single_tmp is not None
            replace(self._single_tmp, final)
        except BaseException:
            self._discard_single()
            raise
        self._single = self._single_tmp = None
        atexit.unregister(self._discard_single)
        size = len(archive.manifest_json())
        if size > MANIFEST_LIMIT:
            self.notes.append(f"manifest.json of {final} is {size} bytes: skopeo and podman refuse more than "
                              f"{MANIFEST_LIMIT} (docker load takes it); select fewer images per --single-file")

    def hint(self, results: list[Result]) -> list[str]:
        return hint_lines(results, self.out.root, self.options, self.single)
