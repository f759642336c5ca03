"""Who is asking: the verified identity a request acts as. Pure: no I/O, no clock.

The transport verifies tokens (``transport/auth.py``) and hands the actors this value; the
actors and the operation handlers decide with it what a request may do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import Forbidden, InvalidRequest

__all__ = ["ALL_PROJECTS", "Principal"]

#: The ``project_id`` of an admin token for every project.
ALL_PROJECTS = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified token's identity. Immutable: a refresh makes a new one."""

    sub: str
    agent_type: str
    project_id: str  # ALL_PROJECTS for an all-projects admin token
    permissions: frozenset[str]
    exp: float  # seconds since 1970 (the token's ``exp`` claim)
    claims: dict[str, Any]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.permissions

    def require(self, permission: str) -> None:
        """Raises :class:`Forbidden` unless the token grants ``permission``."""
        if permission not in self.permissions:
            raise Forbidden(f"this token lacks the '{permission}' permission")

    def project_for(self, requested: str | None) -> str:
        """The project a request acts on: the token's, or the one it names.

        Raises :class:`Forbidden` if it names another project (unless an all-projects admin)
        and :class:`InvalidRequest` if an all-projects token names none.
        """
        if requested is None or requested == self.project_id:
            if self.project_id == ALL_PROJECTS:
                raise InvalidRequest("project_id", "an all-projects token must name a project_id")
            return self.project_id
        if self.project_id == ALL_PROJECTS and self.is_admin:
            return requested
        raise Forbidden("the token is scoped to another project")
