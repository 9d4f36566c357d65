"""The exceptions the archive reader raises: one-line messages the CLI prints as they are."""

from __future__ import annotations

from regcarve.sources.base import InputError


class ArchiveError(InputError):
    """Input cannot be read as a tar archive; the message is one line, meant for the user."""


class NotATar(ArchiveError):
    pass


class TruncatedInput(ArchiveError):
    pass


class CorruptInput(ArchiveError):
    pass


class SourceError(Exception):
    """Raised below the tar walker; the walker re-raises it as `cls` with the member named."""

    def __init__(self, cls: type[ArchiveError], message: str) -> None:
        super().__init__(message)
        self.cls = cls
        self.message = message


def count_nonzero(data: bytes | bytearray) -> int:
    return len(data) - data.count(0)


class NotRegistryStorage(InputError):
    """The input is a readable tar, but holds no registry storage."""


def handed_out(parts: list, error: SourceError | None) -> bytes:
    """A decoder's read: what it decoded, else the error it met, else b"" (the end). An error waits
    until every byte decoded before it is out."""
    if parts:
        return b"".join(parts)
    if error is not None:
        raise error
    return b""
