"""What every endpoint of the Bacalhau-style door shares: the view wrapper (echo's error
shape `{"message", "error"}` with a 4xx, never a 5xx), the caller from the Crunch API token
(`Authorization: Bearer`, which bacalhau-apiclient sends through `set_default_header`),
namespaces as Crunch projects, and finding a job by its ID or a unique prefix of it."""

from __future__ import annotations

import functools
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from api.authentication import authenticate
from api.bacalhau import wire
from api.bacalhau.wire import BacalhauError
from jobs import permissions
from jobs.exceptions import CrunchError, NotFound, NotLoggedIn
from jobs.models import Group, JobTemplate
from jobs.selectors import project_named
from jobs.services.objects import Actor
from jobs.templates import templates_readable

log = logging.getLogger("crunch.api.bacalhau")

View = Callable[..., HttpResponseBase]
SHORT_ID_MIN = 6  # `j-` and a few hex digits


def bacalhau_view(methods: tuple[str, ...]) -> Callable[[View], View]:
    def wrap(fn: View) -> View:
        @csrf_exempt
        @functools.wraps(fn)
        def view(request: HttpRequest, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method not in methods:
                    raise BacalhauError(405, "Method Not Allowed")
                return fn(request, **kwargs)
            except BacalhauError as exc:
                return JsonResponse(exc.body(), status=exc.status)
            except NotLoggedIn:
                error = BacalhauError(
                    401, "Unauthorized: send the Crunch API token as a Bearer token"
                )
            except NotFound as exc:
                error = BacalhauError(404, "; ".join(exc.messages))
            except CrunchError as exc:
                forbidden = exc.code == "forbidden"
                error = BacalhauError(
                    403 if forbidden else 400,
                    "Permission denied" if forbidden else "; ".join(exc.messages),
                )
            except Exception:
                token = secrets.token_hex(6)
                log.exception("unexpected error %s on %s %s", token, request.method, request.path)
                error = BacalhauError(400, f"The request could not be handled (error {token})")
            return JsonResponse(error.body(), status=error.status)

        return view

    return wrap


def actor_of(request: HttpRequest) -> Actor:
    actor = authenticate(request, {})
    assert actor is not None  # authenticate raises NotLoggedIn otherwise
    return actor


def body_of(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise wire.bad("the request body is not JSON") from None


def namespace_owner(actor: Actor, name: str | None, *, write: bool) -> str:
    """The project a namespace names (uuid or name); none or `default`: the caller's home
    project. 404 for a project the caller cannot see; 403 to write one it cannot write."""
    user = actor.user
    if not name or name in ("default", user.uuid):
        return str(user.uuid)
    group = project_named(user, name)
    if group is None:
        raise BacalhauError(404, f"namespace {name} not found")
    if write and not permissions.can_write(user, group):
        raise BacalhauError(403, f"namespace {name}: permission denied (no write permission)")
    return str(group.uuid)


def namespace_name(owner_uuid: str, actor: Actor) -> str:
    """`default` for the caller's home project, else the project's name (its uuid when two
    of the caller's projects share the name is not worth a query here)."""
    if owner_uuid == actor.user.uuid:
        return "default"
    name = Group.objects.filter(uuid=owner_uuid).values_list("name", flat=True).first()
    return name or owner_uuid


def find_job(actor: Actor, job_id: str) -> JobTemplate:
    """A job by its ID, a unique prefix of it (`j-1234abcd`), or its name in the caller's
    home project; 404 otherwise (also for a job the caller cannot read)."""
    readable = templates_readable(actor, wire.DOOR)
    if len(job_id) <= 64:
        exact = readable.filter(external_id=job_id).first()
        if exact is not None:
            return exact
        if job_id.startswith("j-") and len(job_id) >= SHORT_ID_MIN:
            matches = list(readable.filter(external_id__startswith=job_id)[:2])
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise wire.bad(f"job id {job_id} is ambiguous: give more of it")
    if len(job_id) <= 255:
        named = readable.filter(owner_uuid=actor.user.uuid, name=job_id).first()
        if named is not None:
            return named
    raise BacalhauError(404, f"job not found: {job_id}")
