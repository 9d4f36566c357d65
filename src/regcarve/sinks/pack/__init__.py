"""`regcarve pack`: volumes of whole images, each a registry storage of its own (see sink.py)."""

from regcarve.sinks.pack.options import PackOptions
from regcarve.sinks.pack.sink import PackSink

__all__ = ["PackOptions", "PackSink"]
