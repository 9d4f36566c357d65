"""Where the storage sits below the folder a user names: PATH itself, or PATH/docker/registry/v2,
PATH/registry/v2 or PATH/v2 — the first that holds `blobs/` and `repositories/` as real folders."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from regcarve.sources.base import InputError

SPELLINGS = ("", "docker/registry/v2", "registry/v2", "v2")


@dataclass(frozen=True, slots=True)
class StorageRoot:
    given: str  # the path the user named
    spelling: str  # which of SPELLINGS below it holds the storage ("" for the path itself)
    path: str  # the storage folder, resolved: what nothing is followed out of

    def shown(self, rel: str) -> str:
        """A path below the root as a tar of the given folder would name it (docker/registry/v2/…)."""
        return f"{self.spelling}/{rel}" if self.spelling else rel


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def holds_storage(folder: str) -> bool:
    # the folder itself may be a symlink (a mount point, a volume): the user named it
    return os.path.isdir(folder) and all(_is_real_dir(os.path.join(folder, name)) for name in ("blobs", "repositories"))


def find_root(path: str) -> StorageRoot | None:
    for spelling in SPELLINGS:
        folder = os.path.join(path, spelling) if spelling else path
        if holds_storage(folder):
            return StorageRoot(path, spelling, os.path.realpath(folder))
    return None


def require_root(path: str) -> StorageRoot:
    found = find_root(path)
    if found is None:
        looked = ", ".join(os.path.join(path, s) if s else path for s in SPELLINGS)
        raise InputError(f"{path}: no registry storage found (a folder holding blobs/ and repositories/; looked at "
                         f"{looked})")
    return found


def is_inside(path: str | os.PathLike[str], root: str) -> bool:
    """Whether `path` (which need not exist yet) is the root or below it, once links are resolved."""
    resolved = os.path.realpath(path)
    return resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep)
