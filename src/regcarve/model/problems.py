"""What is wrong with the input: stable problem codes, with the tags each one breaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Severity(Enum):
    ERROR = "error"  # an image that depends on it cannot be written
    WARNING = "warning"  # worth knowing; nothing is lost because of it


@dataclass(slots=True)
class Problem:
    """One thing wrong with the input. `code` values are stable (they are part of the JSON schema)."""

    code: str
    message: str
    severity: Severity = Severity.ERROR
    subject: str = ""  # the member, blob digest or repository it is about
    affects: list[str] = field(default_factory=list)  # repo:tag refs it breaks

    def to_json(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "subject": self.subject,
            "message": self.message,
            "affects": sorted(self.affects),
        }


def unique(problems: list[Problem]) -> list[Problem]:
    """The same problem objects once each, in order."""
    seen: dict[int, Problem] = {}
    for p in problems:
        seen.setdefault(id(p), p)
    return list(seen.values())
