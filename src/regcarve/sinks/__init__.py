"""Where images go. To add an output format, write one module here whose class follows `base.Sink`,
and register it in FORMATS with one line."""

from __future__ import annotations

import importlib

from regcarve.sinks.base import Sink

FORMATS: dict[str, str] = {  # --format name → "module:class", imported only when chosen
    "dir": "regcarve.sinks.dirfmt:DirSink",
    "oci": "regcarve.sinks.oci:OciSink",
    "docker-archive": "regcarve.sinks.dockerarchive:DockerArchiveSink",
}


def sink_class(fmt: str) -> type[Sink]:
    module, name = FORMATS[fmt].split(":")
    return getattr(importlib.import_module(module), name)
