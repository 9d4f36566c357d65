"""regcarve: read a Docker Registry storage tarball in one pass and write its images."""

__version__ = "0.1.0"
