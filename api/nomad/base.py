"""What every endpoint of the Nomad-style door shares: the view wrapper (plain-text errors
with Nomad's words, never a 5xx, Nomad's index headers), the caller from X-Nomad-Token,
namespaces as Crunch projects, and finding jobs by their Nomad IDs."""

from __future__ import annotations

import functools
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from api.authentication import bearer_token, client_ip
from api.nomad import wire
from api.nomad.wire import NomadError
from jobs import permissions
from jobs.exceptions import CrunchError, NotFound, NotLoggedIn
from jobs.models import Execution, Job, JobTemplate
from jobs.selectors import project_named, readable_object, restrict_readable
from jobs.services.objects import Actor
from jobs.services.tokens import scopes_allow, token_authenticate

log = logging.getLogger("crunch.api.nomad")

View = Callable[..., HttpResponseBase]
INDEX_HEADERS = {"X-Nomad-Index": "1", "X-Nomad-LastContact": "0", "X-Nomad-KnownLeader": "true"}
ALLOC_SCAN = 5000  # allocation ids are looked up among the caller's newest dispatched jobs


def nomad_view(methods: tuple[str, ...]) -> Callable[[View], View]:
    def wrap(fn: View) -> View:
        @csrf_exempt
        @functools.wraps(fn)
        def view(request: HttpRequest, **kwargs: Any) -> HttpResponseBase:
            response: HttpResponseBase
            try:
                if request.method not in methods:
                    raise NomadError(405, f"Invalid method {request.method}")
                response = fn(request, **kwargs)
            except NomadError as exc:
                response = text(exc.status, exc.message)
            except NotLoggedIn:
                response = text(403, "Permission denied: send a Crunch token in X-Nomad-Token")
            except NotFound as exc:
                response = text(404, "; ".join(exc.messages))
            except CrunchError as exc:
                status = 403 if exc.code == "forbidden" else 400
                message = "Permission denied" if status == 403 else "; ".join(exc.messages)
                response = text(status, message)
            except Exception:
                token = secrets.token_hex(6)
                log.exception("unexpected error %s on %s %s", token, request.method, request.path)
                response = text(400, f"The request could not be handled (error {token})")
            for name, value in INDEX_HEADERS.items():
                response[name] = value
            return response

        return view

    return wrap


def text(status: int, text: str) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def actor_of(request: HttpRequest) -> Actor:
    """The caller, from `X-Nomad-Token` (what Nomad clients send) or a Bearer token."""
    token = request.headers.get("X-Nomad-Token") or bearer_token(
        request.headers.get("Authorization", "")
    )
    auth = token_authenticate(presented=token, ip_address=client_ip(request)) if token else None
    if auth is None:
        raise NotLoggedIn()
    if not scopes_allow(
        scopes=auth.scopes or [], method=request.method or "GET", path=request.path_info
    ):
        raise NomadError(403, "Permission denied")
    return Actor(user=auth.user, auth=auth)


def body_of(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise wire.bad("Failed to decode the request body as JSON") from None


def namespace_owner(actor: Actor, name: str | None, *, write: bool) -> str:
    """The project a Nomad namespace names (uuid or name); `default` or none: the caller's
    home project."""
    user = actor.user
    if not name or name in ("default", user.uuid):
        return str(user.uuid)
    group = project_named(user, name)
    if group is None:
        raise NomadError(404, f'namespace "{name}" not found')
    if write and not permissions.can_write(user, group):
        raise NomadError(403, "Permission denied")
    return str(group.uuid)


def namespace_param(request: HttpRequest) -> str | None:
    return request.GET.get("namespace") or None


def find_template(actor: Actor, request: HttpRequest, job_id: str) -> JobTemplate | None:
    owner = namespace_owner(actor, namespace_param(request), write=False)
    return JobTemplate.objects.filter(
        door=wire.TEMPLATE_DOOR, owner_uuid=owner, name=job_id
    ).first()


def find_child(actor: Actor, job_id: str) -> Job | None:
    if "/dispatch-" not in job_id or len(job_id) > 250:
        return None
    job = Job.objects.filter(submit_id=wire.SUBMIT_ID_PREFIX + job_id).first()
    if job is None or not readable_object(Job.objects.all(), [actor.user], job.uuid):
        return None
    return job


def template_of(job: Job) -> JobTemplate | None:
    return JobTemplate.objects.filter(uuid=job.template_uuid).first()


def child_by_eval(actor: Actor, eval_id: str) -> Job:
    for child in recent_children(actor):
        if wire.derived_id(wire.child_id(child), "eval") == eval_id:
            return child
    raise NomadError(404, "eval not found")


def recent_children(actor: Actor) -> Iterator[Job]:
    queryset = restrict_readable(
        Job.objects.filter(door="nomad", template_uuid__isnull=False), [actor.user]
    )
    yield from queryset.order_by("-id")[:ALLOC_SCAN]


def find_allocation(actor: Actor, alloc_id: str) -> tuple[Job, Execution]:
    for child in recent_children(actor):
        cid = wire.child_id(child)
        for execution in Execution.objects.filter(job_uuid=child.uuid):
            if wire.derived_id(cid, str(execution.attempt)) == alloc_id:
                return child, execution
    raise NomadError(404, "alloc not found")
