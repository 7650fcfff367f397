"""Domain errors. Each carries a `code`; `api/exceptions.py` maps codes to HTTP statuses."""

from __future__ import annotations


class CrunchError(Exception):
    """Base of every error a client may see. `messages` are plain, human-readable sentences."""

    code = "invalid"
    default_message = "Invalid request"

    def __init__(self, *messages: str) -> None:
        self.messages = [str(m) for m in messages] or [self.default_message]
        super().__init__("; ".join(self.messages))


class InvalidRequest(CrunchError):
    """Bad parameters, bad filters, validation failures (HTTP 422)."""


class NotLoggedIn(CrunchError):
    code = "unauthenticated"
    default_message = "Not logged in"


class Forbidden(CrunchError):
    code = "forbidden"
    default_message = "Forbidden"


class PermissionDenied(CrunchError):
    code = "forbidden"
    default_message = "Permission denied"


class NotFound(CrunchError):
    code = "not_found"
    default_message = "Path not found"


class Disabled(CrunchError):
    code = "not_found"
    default_message = "Disabled"


class RepositoryUnusable(InvalidRequest):
    """The repository cannot be read at all (missing, unreadable, fetch failed)."""


class Conflict(InvalidRequest):
    """A unique value is taken (a concurrent request may have taken it first)."""


class InvalidTransition(InvalidRequest):
    """A state change the job state table has no edge for (HTTP 422)."""

    def __init__(self, job_uuid: str, *, frm: str | None, to: str) -> None:
        self.job_uuid, self.frm, self.to = job_uuid, frm, to
        super().__init__(f"State invalid change from {frm} to {to}")
