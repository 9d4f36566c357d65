"""What is wrong with the input: stable problem codes, with the tags each one breaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Severity(Enum):
    ERROR = "error"  # an image that depends on it cannot be written
    WARNING = "warning"  # worth knowing; nothing is lost because of it


# input problems that lose tags no image result can name (the name itself is what is wrong)
LOST_BY_NAME = ("invalid-repository-name", "invalid-tag")


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


def fails_run(problem: Problem, strict: bool = False) -> bool:
    """Whether the problem makes a command's exit code non-zero: an error that breaks a tag, loses
    one by its name, or is about the input as a whole (a cut); any problem at all when `strict`.
    An error about nothing a tag needs (a corrupt orphan blob) is a finding, not a failure."""
    if strict:
        return True
    if problem.severity is Severity.WARNING:
        return False
    return bool(problem.affects) or problem.subject == "input" or problem.code in LOST_BY_NAME
