"""Where a push lands: `HOST[:PORT][/PREFIX]`, and the repository each source repository becomes there.

Repository `R` lands at `HOST[:PORT]/PREFIX/R`, as `skopeo sync --scoped` names it. Harbor keeps every
repository in a project (its first path component), so a single-component name (`app`) has nowhere
to go there: `default_project` puts such names into a project (`library/app`) and leaves the others be.
"""

from __future__ import annotations

from dataclasses import dataclass

from regcarve.model.names import in_project, project_problem, split_registry_prefix


@dataclass(frozen=True)
class Destination:
    host: str  # HOST[:PORT]
    prefix: str = ""  # path components every repository goes under
    default_project: str = ""  # the project single-component names go into

    @classmethod
    def parse(cls, text: str, default_project: str = "") -> "Destination":
        """ValueError, with the reason, for anything that is not HOST[:PORT][/PREFIX]."""
        for scheme in ("https://", "http://"):
            if text.startswith(scheme):
                raise ValueError(f"{text!r}: give HOST[:PORT][/PREFIX] without {scheme} (see --plain-http)")
        host, prefix = split_registry_prefix(text.strip().rstrip("/"))
        if default_project and (why := project_problem(default_project)) is not None:
            raise ValueError(f"--default-project: {why}")
        return cls(host, prefix, default_project)

    def repository(self, source: str) -> str:
        """The repository `source` becomes at the destination (not yet checked against the grammar)."""
        if self.prefix:
            return f"{self.prefix}/{source}"
        return in_project(source, self.default_project)

    def reference(self, repository: str, tag: str) -> str:
        return f"{self.host}/{repository}:{tag}"

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host


def project_of(repository: str) -> str:
    """Harbor's project: the first path component."""
    return repository.split("/", 1)[0]
