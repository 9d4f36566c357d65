"""docker-archive tarballs for `docker load`: the sink (sink.py), what it plans of each image (image.py),
an archive as it is filled (archive.py), its layers (layers.py), its files (files.py), its summary (hint.py)."""

from regcarve.sinks.dockerarchive.image import check_repo_prefix
from regcarve.sinks.dockerarchive.sink import DockerArchiveSink

__all__ = ["DockerArchiveSink", "check_repo_prefix"]
