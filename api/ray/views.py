"""The Ray-style door's HTTP endpoints (Ray's job REST API and the seed's Submit Job).

Every request authenticates with the Crunch API token (`Authorization: Bearer`, which Ray's
client sends through `headers=`). `X-Tenant-Id` names the Crunch project a job belongs to
(absent: the caller's home project); `X-Pool-Label` keeps a job to nodes labelled
`pool=<value>`. Jobs are submitted through the core (`jobs.submit.job_submit`) as command
jobs `sh -c <entrypoint>` over the uploaded working directory, so they run, log, reuse and
show their lineage like every other Crunch job.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import tempfile
from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from api.authentication import authenticate
from api.ray import tenants, wire
from api.ray.wire import RayError
from jobs import placement
from jobs.exceptions import Conflict, CrunchError, InvalidRequest, NotFound, NotLoggedIn
from jobs.keep.archives import collection_from_zip
from jobs.models import Execution, Job
from jobs.selectors import readable_object, restrict_readable
from jobs.services.jobs import SERVICE, job_cancel
from jobs.services.objects import Actor
from jobs.services.runs import job_log_text
from jobs.spec import JobSpec
from jobs.submit import job_submit

log = logging.getLogger("crunch.api.ray")

PACKAGE_MAX = 512 * 1024 * 1024
CHUNK = 1024 * 1024
VERSION = {
    "version": "4",
    "ray_version": "2.60.0",
    "ray_commit": "crunch",
    "session_name": "crunch",
}

View = Callable[..., HttpResponse]


def ray_view(methods: tuple[str, ...]) -> Callable[[View], View]:
    """A door endpoint: only `methods`; every refusal is text with a 4xx, never a 5xx."""

    def wrap(fn: View) -> View:
        @csrf_exempt
        @functools.wraps(fn)
        def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return _text(405, f"Method {request.method} is not allowed here")
            try:
                return fn(request, **kwargs)
            except RayError as exc:
                return _text(exc.status, exc.message)
            except NotLoggedIn:
                return _text(401, "Not logged in: send the Crunch API token as a Bearer token")
            except NotFound as exc:
                return _text(404, "; ".join(exc.messages))
            except CrunchError as exc:
                status = 403 if exc.code == "forbidden" else 400
                return _text(status, "; ".join(exc.messages))
            except RequestDataTooBig:
                return _text(413, "The request body is too large")
            except Exception:
                token = secrets.token_hex(6)
                log.exception("unexpected error %s on %s %s", token, request.method, request.path)
                return _text(400, f"The request could not be handled (error {token})")

        return view

    return wrap


def _text(status: int, text: str) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _actor(request: HttpRequest) -> Actor:
    actor = authenticate(request, {})
    assert actor is not None  # authenticate raises NotLoggedIn otherwise
    return actor


def find_job(actor: Actor, job_id: str) -> Job:
    """A job by its submission id (or uuid) that the caller may read; 404 otherwise."""
    if len(job_id) <= 128:
        job = Job.objects.filter(submit_id=wire.SUBMIT_ID_PREFIX + job_id).first()
        if job is None:
            job = Job.objects.filter(uuid=job_id).first()
        if job is not None and readable_object(Job.objects.all(), [actor.user], job.uuid):
            return job
    raise RayError(404, f"Job {job_id} does not exist")


def _last_execution(job: Job) -> Execution | None:
    return Execution.objects.filter(job_uuid=job.uuid).order_by("-attempt", "-id").first()


def details(job: Job) -> dict[str, Any]:
    execution = _last_execution(job)
    exit_code = execution.exit_code if execution is not None else None
    reason = execution.reason if execution is not None else None
    tail = ""
    if job.state == "Failed" and exit_code is not None:
        tail = job_log_text(job_uuid=job.uuid)[-wire.LOG_TAIL_CHARS :]
    return wire.job_details(job, exit_code=exit_code, reason=reason, log_tail=tail)


# --- version -------------------------------------------------------------------------------


@ray_view(("GET",))
def version(request: HttpRequest) -> HttpResponse:
    return JsonResponse(VERSION)


# --- jobs ----------------------------------------------------------------------------------


@ray_view(("GET", "POST"))
def jobs_collection(request: HttpRequest) -> HttpResponse:
    actor = _actor(request)
    if request.method == "GET":
        queryset = Job.objects.filter(door="ray")
        if request.headers.get("X-Tenant-Id"):
            queryset = queryset.filter(owner_uuid=tenants.tenant(request, actor))
        jobs = restrict_readable(queryset, [actor.user]).order_by("-created_at", "-id")[:1000]
        return JsonResponse([details(job) for job in jobs], safe=False)
    return submit(request, actor)


def submit(request: HttpRequest, actor: Actor) -> HttpResponse:
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise RayError(400, "The request body must be JSON") from None
    sub = wire.parse_submit(body)
    owner = tenants.tenant(request, actor)
    submission_id = sub.submission_id or f"app-{secrets.token_hex(8)}"
    submit_id = wire.SUBMIT_ID_PREFIX + submission_id
    duplicate = RayError(
        400,
        f"Job with submission_id {submission_id} already exists. "
        "Please use a different submission_id.",
    )
    if Job.objects.filter(submit_id=submit_id).exists():
        raise duplicate
    constraints: dict[str, Any] = {}
    if sub.cpus is not None:
        constraints["vcpus"] = sub.cpus
    if sub.memory is not None:
        constraints["ram"] = sub.memory
    if sub.gpus:
        constraints["gpus"] = sub.gpus
    if sub.resources:
        constraints["resources"] = sub.resources
    pool = request.headers.get("X-Pool-Label")
    if pool is not None:
        try:
            placement.parse_selector(f"pool={pool}", where="X-Pool-Label")
        except InvalidRequest as exc:
            raise RayError(400, f"X-Pool-Label {pool!r} is not a label value: {exc}") from None
        constraints["constraints"] = [f"pool={pool}"]
    try:
        requirements = placement.Requirements.of(constraints)
    except InvalidRequest as exc:
        raise RayError(400, "; ".join(exc.messages)) from None
    nodes = placement.live_node_views()
    if nodes:
        verdict = placement.verdict(requirements, nodes)
        if verdict.message is not None:
            raise RayError(
                400,
                f"create app failed, submissionId:[{submission_id}], err: \nthe instance "
                "cannot be scheduled: no available resource that meets the request "
                f"requirements, The reasons are as follows:\n\t{verdict.message}",
            )
    spec = JobSpec(
        command=("sh", "-c", sub.entrypoint),
        working_dir=tenants.working_dir(sub.working_dir, owner=owner),
        environment=sub.env_vars,
        runtime_constraints=constraints,
        meta=sub.metadata,
        python_requirements=tuple(sub.pip) or None,
        owner_uuid=owner,
        submit_id=submit_id,
        door="ray",
    )
    try:
        submission = job_submit(actor=actor, spec=spec, reuse=sub.reuse)
    except (IntegrityError, Conflict):
        raise duplicate from None  # an identical submission_id won the race
    except InvalidRequest as exc:
        if any("submit_id" in m and "already used" in m for m in exc.messages):
            raise duplicate from None
        raise
    rid = wire.ray_id(submission.job)
    return JsonResponse({"job_id": rid, "submission_id": rid})


@ray_view(("GET", "DELETE"))
def job_item(request: HttpRequest, job_id: str) -> HttpResponse:
    actor = _actor(request)
    job = find_job(actor, job_id)
    if request.method == "GET":
        return JsonResponse(details(job))
    if job.state not in wire.TERMINAL:
        status = wire.STATUS.get(job.state or "", "PENDING")
        raise RayError(
            400, f"Attempted to delete job '{job_id}', but it is in a non-terminal state {status}."
        )
    SERVICE.delete(actor=actor, obj=job)
    return JsonResponse({"deleted": True})


@ray_view(("GET",))
def job_logs(request: HttpRequest, job_id: str) -> HttpResponse:
    job = find_job(_actor(request), job_id)
    return JsonResponse({"logs": job_log_text(job_uuid=job.uuid)})


@ray_view(("POST",))
def job_stop(request: HttpRequest, job_id: str) -> HttpResponse:
    actor = _actor(request)
    job = find_job(actor, job_id)
    if job.state in wire.TERMINAL:
        return JsonResponse({"stopped": False})
    job_cancel(actor=actor, job=job)
    return JsonResponse({"stopped": True})


# --- working_dir packages ------------------------------------------------------------------


@ray_view(("GET", "PUT"))
def package(request: HttpRequest, protocol: str, name: str) -> HttpResponse:
    actor = _actor(request)
    if protocol != "gcs" or not wire.PACKAGE_RE.match(f"gcs://{name}"):
        raise RayError(400, f"Unsupported package {protocol}://{name}: gcs://_ray_pkg_<hex>.zip")
    owner = tenants.tenant(request, actor)
    if request.method == "GET":
        if tenants.package_collection(name, owner=owner) is None:
            raise RayError(404, f"Package {protocol}://{name} does not exist")
        return _text(200, "")
    length = request.headers.get("Content-Length")
    if length is not None and (not length.isdigit() or int(length) > PACKAGE_MAX):
        raise RayError(413, f"A package holds at most {PACKAGE_MAX} bytes")
    with tempfile.TemporaryFile() as spool:
        received = 0
        while chunk := request.read(CHUNK):
            received += len(chunk)
            if received > PACKAGE_MAX:
                raise RayError(413, f"A package holds at most {PACKAGE_MAX} bytes")
            spool.write(chunk)
        spool.seek(0)
        collection = collection_from_zip(
            actor=actor,
            archive=spool,
            owner_uuid=owner,
            name=f"Ray package {name}",
            properties={"ray_package": name},
        )
    tenants.set_package(name, owner=owner, collection=collection, actor=actor)
    return _text(200, "")
