"""Registry storage as an extracted folder: found below the path given, walked by name, verified on
every core (or only by size), and read in place."""

from regcarve.sources.tree.root import StorageRoot, find_root, is_inside, require_root
from regcarve.sources.tree.source import TreeBlobs, TreeSource

__all__ = ["StorageRoot", "TreeBlobs", "TreeSource", "find_root", "is_inside", "require_root"]
