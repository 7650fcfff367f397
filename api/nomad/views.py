"""The Nomad-style door's HTTP API: the subset of Nomad's `/v1` that python-nomad and
`crunch job dispatch` use for parameterized jobs.

A parameterized job is a core job template (jobs/templates.py) in the Crunch project its
`Namespace` names (the caller's home project without one); `dispatch` instantiates it into
a core job whose ID is `<parent>/dispatch-<unix seconds>-<8 hex>`, with the payload written
to `local/<DispatchPayload.File>` of its working tree and the meta in `NOMAD_META_*`. An
evaluation is the placement verdict on the live nodes, an allocation is one of the job's
executions, and allocation logs come from the job's gap-free log. Errors are plain text
with Nomad's words; dispatch refusals are 400 (404 for an unknown job), where Nomad
answers 500.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import secrets
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from api.authentication import bearer_token, client_ip
from api.nomad import wire
from api.nomad.wire import NomadError
from jobs import permissions, placement
from jobs.exceptions import CrunchError, InvalidRequest, NotFound, NotLoggedIn
from jobs.keep.archives import collection_with_files
from jobs.models import Execution, Group, Job, JobState, JobTemplate
from jobs.selectors import readable_object, restrict_readable
from jobs.services.objects import Actor
from jobs.services.runs import job_log_text
from jobs.services.tokens import scopes_allow, token_authenticate
from jobs.spec import JobSpec
from jobs.templates import (
    template_instances,
    template_instantiate,
    template_register,
    template_stop,
    templates_readable,
)

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
                response = _text(exc.status, exc.message)
            except NotLoggedIn:
                response = _text(403, "Permission denied: send a Crunch token in X-Nomad-Token")
            except NotFound as exc:
                response = _text(404, "; ".join(exc.messages))
            except CrunchError as exc:
                status = 403 if exc.code == "forbidden" else 400
                message = "Permission denied" if status == 403 else "; ".join(exc.messages)
                response = _text(status, message)
            except Exception:
                token = secrets.token_hex(6)
                log.exception("unexpected error %s on %s %s", token, request.method, request.path)
                response = _text(400, f"The request could not be handled (error {token})")
            for name, value in INDEX_HEADERS.items():
                response[name] = value
            return response

        return view

    return wrap


def _text(status: int, text: str) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _actor(request: HttpRequest) -> Actor:
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


def _body(request: HttpRequest) -> Any:
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
    group = None
    if len(name) <= 255:
        group = readable_object(Group.objects.all(), [user], name) or (
            restrict_readable(Group.objects.filter(name=name, group_class="project"), [user])
            .order_by("created_at", "id")
            .first()
        )
    if group is None:
        raise NomadError(404, f'namespace "{name}" not found')
    if write and not permissions.can_write(user, group):
        raise NomadError(403, "Permission denied")
    return str(group.uuid)


def _namespace_param(request: HttpRequest) -> str | None:
    return request.GET.get("namespace") or None


def find_template(actor: Actor, request: HttpRequest, job_id: str) -> JobTemplate | None:
    owner = namespace_owner(actor, _namespace_param(request), write=False)
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


def _template_of(job: Job) -> JobTemplate | None:
    return JobTemplate.objects.filter(uuid=job.template_uuid).first()


# --- shapes --------------------------------------------------------------------------------


def _namespace_name(owner_uuid: str, actor: Actor) -> str:
    if owner_uuid == actor.user.uuid:
        return "default"
    group = Group.objects.filter(uuid=owner_uuid).first()
    return group.name if group is not None and group.name else owner_uuid


def _summary(template: JobTemplate, children: list[Job], namespace: str) -> dict[str, Any]:
    group = template.spec.get("group", template.name)
    counts = {"Pending": 0, "Running": 0, "Dead": 0}
    for child in children:
        counts[wire.job_status(child).capitalize()] += 1
    return {
        "JobID": template.name,
        "Namespace": namespace,
        "Summary": {
            group: {
                "Queued": 0,
                "Complete": 0,
                "Failed": 0,
                "Running": 0,
                "Starting": 0,
                "Lost": 0,
                "Unknown": 0,
            }
        },
        "Children": counts,
        "CreateIndex": template.pk,
        "ModifyIndex": template.pk,
    }


def template_json(template: JobTemplate, actor: Actor, *, stub: bool, meta: bool = True) -> Any:
    namespace = _namespace_name(template.owner_uuid, actor)
    document = dict(template.definition)
    common = {
        "ID": template.name,
        "ParentID": "",
        "Name": document.get("Name", template.name),
        "Namespace": namespace,
        "Type": document.get("Type", "batch"),
        "Priority": document.get("Priority", 50),
        "Status": "dead" if template.stopped else "running",
        "StatusDescription": "",
        "Stop": template.stopped,
        "Version": template.version,
        "CreateIndex": template.pk,
        "ModifyIndex": template.pk,
        "JobModifyIndex": template.pk,
        "SubmitTime": wire.nanos(template.modified_at),
    }
    if stub:
        children = list(template_instances(template).only("state"))
        stub_json = common | {
            "Datacenters": document.get("Datacenters", ["dc1"]),
            "Periodic": False,
            "ParameterizedJob": True,
            "JobSummary": _summary(template, children, namespace),
        }
        if meta:
            stub_json["Meta"] = document.get("Meta") or {}
        return stub_json
    return document | common | {"Dispatched": False, "Meta": document.get("Meta") or {}}


def child_json(job: Job, actor: Actor) -> dict[str, Any]:
    template = _template_of(job)
    document = dict(template.definition) if template is not None else {}
    cid = wire.child_id(job)
    return document | {
        "ID": cid,
        "Name": cid,
        "ParentID": template.name if template is not None else "",
        "Dispatched": True,
        "Namespace": _namespace_name(job.owner_uuid, actor),
        "Meta": dict(job.meta or {}),
        "Status": wire.job_status(job),
        "StatusDescription": "",
        "Stop": job.state == JobState.CANCELLED,
        "Version": job.template_version or 0,
        "CreateIndex": job.pk,
        "ModifyIndex": job.pk,
        "JobModifyIndex": job.pk,
        "SubmitTime": wire.nanos(job.created_at),
        "Crunch": {"uuid": job.uuid, "state": job.state, "output": job.output, "log": job.log},
    }


def _metric(job: Job) -> dict[str, Any] | None:
    """Why no live node can run the job, in Nomad's AllocationMetric shape; None when one
    can (busy or not)."""
    try:
        req = placement.Requirements.of(job.runtime_constraints)
    except InvalidRequest:
        return None
    nodes = placement.live_node_views()
    if placement.verdict(req, nodes).message is None:
        return None
    filtered: dict[str, int] = {}
    dimensions: dict[str, int] = {}
    exhausted = 0
    for node in nodes:
        failing = next((c for c in req.constraints if c.problem(node.labels) is not None), None)
        if failing is not None:
            filtered[str(failing)] = filtered.get(str(failing), 0) + 1
            continue
        dims = [
            name
            for name, short in (("cpu", req.cpus > node.cpus), ("memory", req.ram > node.ram_bytes))
            if short
        ]
        if req.gpus > node.gpus:
            dims.append("gpus")
        dims += [n for n, amount in req.resources if amount > node.resources.get(n, 0.0)]
        if dims:
            exhausted += 1
            for dim in dims:
                dimensions[dim] = dimensions.get(dim, 0) + 1
    return {
        "NodesEvaluated": len(nodes),
        "NodesFiltered": sum(filtered.values()),
        "NodesInPool": len(nodes),
        "NodePool": "default",
        "NodesAvailable": {"dc1": len(nodes)},
        "ClassFiltered": None,
        "ConstraintFiltered": filtered or None,
        "NodesExhausted": exhausted,
        "ClassExhausted": None,
        "DimensionExhausted": dimensions or None,
        "QuotaExhausted": None,
        "ResourcesExhausted": None,
        "Scores": None,
        "AllocationTime": 0,
        "CoalescedFailures": 0,
    }


def evaluation_json(job: Job, actor: Actor) -> dict[str, Any]:
    cid = wire.child_id(job)
    template = _template_of(job)
    group = template.spec.get("group", "") if template is not None else ""
    has_run = Execution.objects.filter(job_uuid=job.uuid).exists()
    failed = _metric(job) if job.state == JobState.QUEUED and not has_run else None
    placed = has_run or job.state != JobState.QUEUED
    status = "complete" if placed or failed is not None else "pending"
    return {
        "ID": wire.derived_id(cid, "eval"),
        "Namespace": _namespace_name(job.owner_uuid, actor),
        "Priority": 50,
        "Type": "batch",
        "TriggeredBy": "job-register",
        "JobID": cid,
        "JobModifyIndex": job.pk,
        "NodeID": "",
        "DeploymentID": "",
        "Status": status,
        "StatusDescription": "",
        "Wait": 0,
        "NextEval": "",
        "PreviousEval": "",
        "BlockedEval": wire.derived_id(cid, "blocked") if failed is not None else "",
        "FailedTGAllocs": {group: failed} if failed is not None else None,
        "QueuedAllocations": {group: 1 if failed is not None else 0},
        "CreateIndex": job.pk,
        "ModifyIndex": job.pk,
        "CreateTime": wire.nanos(job.created_at),
        "ModifyTime": wire.nanos(job.modified_at),
    }


def allocation_json(job: Job, execution: Execution, actor: Actor) -> dict[str, Any]:
    cid = wire.child_id(job)
    template = _template_of(job)
    group = template.spec.get("group", "") if template is not None else ""
    task = template.spec.get("task", "") if template is not None else ""
    client_status = wire.CLIENT_STATUS.get(execution.state, "pending")
    ended = execution.finished_at is not None
    failed = execution.state in ("Failed", "Lost")
    return {
        "ID": wire.derived_id(cid, str(execution.attempt)),
        "EvalID": wire.derived_id(cid, "eval"),
        "Name": f"{cid}.{group}[0]",
        "Namespace": _namespace_name(job.owner_uuid, actor),
        "NodeID": execution.node_uuid or "",
        "NodeName": execution.hostname or execution.node_uuid or "",
        "JobID": cid,
        "JobType": "batch",
        "JobVersion": job.template_version or 0,
        "TaskGroup": group,
        "DesiredStatus": "stop" if job.state == JobState.CANCELLED else "run",
        "DesiredDescription": "",
        "ClientStatus": client_status,
        "ClientDescription": {
            "complete": "All tasks have completed",
            "failed": "Failed tasks",
            "running": "Tasks are running",
        }.get(client_status, ""),
        "TaskStates": {
            task: {
                "State": "dead" if ended else "running",
                "Failed": failed,
                "Restarts": execution.attempt - 1,
                "StartedAt": _iso(execution.started_at),
                "FinishedAt": _iso(execution.finished_at),
                "Events": [],
            }
        },
        "FollowupEvalID": "",
        "NextAllocation": "",
        "CreateIndex": job.pk,
        "ModifyIndex": job.pk,
        "CreateTime": wire.nanos(execution.started_at),
        "ModifyTime": wire.nanos(execution.finished_at or execution.started_at),
        "Crunch": {"execution": execution.uuid, "exit_code": execution.exit_code},
    }


def _iso(moment: Any) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None


def _allocations(job: Job, actor: Actor) -> list[dict[str, Any]]:
    executions = Execution.objects.filter(job_uuid=job.uuid).order_by("attempt")
    return [allocation_json(job, e, actor) for e in executions]


# --- jobs ----------------------------------------------------------------------------------


def register(request: HttpRequest, actor: Actor, url_id: str | None) -> HttpResponse:
    reg = wire.parse_register(_body(request), url_id=url_id)
    owner = namespace_owner(actor, reg.namespace or _namespace_param(request), write=True)
    template, _ = template_register(
        actor=actor,
        owner_uuid=owner,
        door=wire.TEMPLATE_DOOR,
        name=reg.id,
        spec=reg.spec,
        definition=reg.document,
    )
    return JsonResponse(
        {
            "EvalID": "",
            "EvalCreateIndex": 0,
            "JobModifyIndex": template.pk,
            "Warnings": "",
            "Index": template.pk,
            "LastContact": 0,
            "KnownLeader": False,
            "NextToken": "",
            "Crunch": {"version": template.version},
        }
    )


@nomad_view(("GET", "POST", "PUT"))
def jobs_collection(request: HttpRequest) -> HttpResponse:
    actor = _actor(request)
    if request.method != "GET":
        return register(request, actor, None)
    prefix = request.GET.get("prefix") or ""
    namespace = _namespace_param(request)
    templates = templates_readable(actor, wire.TEMPLATE_DOOR)
    if namespace and namespace != "*":
        templates = templates.filter(owner_uuid=namespace_owner(actor, namespace, write=False))
    if prefix:
        templates = templates.filter(name__startswith=prefix)
    meta = request.GET.get("meta", "").lower() in ("1", "t", "true")
    items = [template_json(t, actor, stub=True, meta=meta) for t in templates.order_by("name")]
    children = restrict_readable(
        Job.objects.filter(door="nomad", template_uuid__isnull=False), [actor.user]
    )
    if prefix:
        children = children.filter(submit_id__startswith=wire.SUBMIT_ID_PREFIX + prefix)
    for child in children.order_by("submit_id")[:1000]:
        stub = child_json(child, actor)
        items.append(
            {k: stub[k] for k in ("ID", "ParentID", "Name", "Namespace", "Type", "Status")}
            | {"ParameterizedJob": False, "Stop": stub["Stop"], "Periodic": False}
            | {"JobSummary": None, "CreateIndex": child.pk, "ModifyIndex": child.pk}
        )
    items.sort(key=lambda item: item["ID"])
    return JsonResponse(items, safe=False)


@nomad_view(("GET", "POST", "PUT", "DELETE"))
def job_item(request: HttpRequest, job_id: str) -> HttpResponse:
    actor = _actor(request)
    if request.method in ("POST", "PUT"):
        return register(request, actor, job_id)
    template = find_template(actor, request, job_id)
    child = None if template is not None else find_child(actor, job_id)
    if template is None and child is None:
        raise NomadError(404, "job not found")
    if request.method == "GET":
        if template is not None:
            return JsonResponse(template_json(template, actor, stub=False))
        assert child is not None
        return JsonResponse(child_json(child, actor))
    if template is not None:
        template_stop(actor=actor, template=template)
        index = template.pk
    else:
        assert child is not None
        from jobs.services.jobs import job_cancel

        if child.state in (JobState.QUEUED, JobState.RUNNING):
            job_cancel(actor=actor, job=child)
        index = child.pk
    return JsonResponse(
        {
            "EvalID": "",
            "EvalCreateIndex": 0,
            "JobModifyIndex": index,
            "VolumeEvalID": "",
            "VolumeEvalIndex": 0,
            "Index": index,
            "LastContact": 0,
            "KnownLeader": False,
            "NextToken": "",
        }
    )


def _job_for(
    actor: Actor, request: HttpRequest, job_id: str
) -> tuple[JobTemplate | None, Job | None]:
    template = find_template(actor, request, job_id)
    child = None if template is not None else find_child(actor, job_id)
    if template is None and child is None:
        raise NomadError(404, "job not found")
    return template, child


@nomad_view(("GET",))
def job_allocations(request: HttpRequest, job_id: str) -> HttpResponse:
    actor = _actor(request)
    _, child = _job_for(actor, request, job_id)
    return JsonResponse(_allocations(child, actor) if child else [], safe=False)


@nomad_view(("GET",))
def job_evaluations(request: HttpRequest, job_id: str) -> HttpResponse:
    actor = _actor(request)
    _, child = _job_for(actor, request, job_id)
    return JsonResponse([evaluation_json(child, actor)] if child else [], safe=False)


@nomad_view(("GET",))
def job_summary(request: HttpRequest, job_id: str) -> HttpResponse:
    actor = _actor(request)
    template, child = _job_for(actor, request, job_id)
    if template is None:
        assert child is not None
        template = _template_of(child)
        if template is None:
            raise NomadError(404, "job not found")
    children = list(template_instances(template).only("state"))
    namespace = _namespace_name(template.owner_uuid, actor)
    return JsonResponse(_summary(template, children, namespace))


@nomad_view(("POST", "PUT"))
def job_dispatch(request: HttpRequest, job_id: str) -> HttpResponse:
    actor = _actor(request)
    template = find_template(actor, request, job_id)
    if template is None:
        if find_child(actor, job_id) is not None:
            raise wire.bad(f'Specified job "{job_id}" is not a parameterized job')
        raise NomadError(404, "parameterized job not found")
    if template.stopped:
        raise wire.bad(f'Specified job "{job_id}" is stopped')
    namespace_owner(actor, _namespace_param(request), write=True)  # ACL: write on the namespace
    dispatch = wire.parse_dispatch(_body(request), query_token=request.GET.get("idempotency_token"))
    refusal = wire.dispatch_refusals(template.definition, dispatch)
    if refusal is not None:
        raise wire.bad(refusal)
    spec = template.spec
    rules = template.definition["ParameterizedJob"]
    merged = dict(spec.get("meta") or {}) | dispatch.meta
    stamp = int(time.time())
    suffix = uuidlib.uuid4().hex[:8]
    middle = f"{dispatch.prefix}-" if dispatch.prefix else ""
    cid = f"{template.name}/dispatch-{middle}{stamp}-{suffix}"
    working_dir = spec.get("working_dir")
    if dispatch.payload and spec.get("payload_file"):
        working_dir = collection_with_files(
            actor=actor,
            base_pdh=working_dir,
            files={f"local/{spec['payload_file']}": dispatch.payload},
            owner_uuid=template.owner_uuid,
            name=f"Working tree of {cid} (dispatch payload)"[:255],
        ).portable_data_hash
    alloc_id = wire.derived_id(cid, "1")
    group, task = spec.get("group", ""), spec.get("task", "")
    runtime = spec.get("runtime_constraints") or {}
    run_environment = {
        "NOMAD_JOB_ID": cid,
        "NOMAD_JOB_NAME": cid,
        "NOMAD_JOB_PARENT_ID": template.name,
        "NOMAD_ALLOC_ID": alloc_id,
        "NOMAD_SHORT_ALLOC_ID": alloc_id[:8],
        "NOMAD_ALLOC_NAME": f"{cid}.{group}[0]",
        "NOMAD_ALLOC_INDEX": "0",
        "NOMAD_TASK_NAME": task,
        "NOMAD_GROUP_NAME": group,
        "NOMAD_NAMESPACE": _namespace_name(template.owner_uuid, actor),
        "NOMAD_REGION": "global",
        "NOMAD_DC": "dc1",
        "NOMAD_TASK_DIR": "local",
        "NOMAD_ALLOC_DIR": "alloc",
        "NOMAD_SECRETS_DIR": "secrets",
        "NOMAD_CPU_LIMIT": str(int(float(runtime.get("vcpus", 0)) * 1000)),
        "NOMAD_MEMORY_LIMIT": str(int(runtime.get("ram", 0)) // (1024 * 1024)),
    }
    job_spec = JobSpec(
        command=tuple(spec["command"]),
        image=spec.get("image"),
        working_dir=working_dir,
        environment=dict(spec.get("environment") or {})
        | wire.meta_environment(merged, rules["MetaOptional"]),
        runtime_constraints=runtime,
        meta=merged,
        owner_uuid=template.owner_uuid,
        submit_id=wire.SUBMIT_ID_PREFIX + cid,
        door="nomad",
        template_uuid=template.uuid,
        template_version=template.version,
        idempotency_key=f"{template.uuid}:{dispatch.token}" if dispatch.token else None,
        run_environment=run_environment,
    )
    reuse = (spec.get("meta") or {}).get("crunch.reuse", "").lower() == "true"
    job, submission = template_instantiate(
        actor=actor, template=template, spec=job_spec, reuse=reuse
    )
    if submission is None:  # the idempotency token's earlier dispatch
        return JsonResponse(
            {
                "DispatchedJobID": wire.child_id(job),
                "EvalID": "",
                "EvalCreateIndex": 0,
                "JobCreateIndex": job.pk,
                "Index": job.pk,
            }
        )
    body: dict[str, Any] = {
        "DispatchedJobID": wire.child_id(job),
        "EvalID": wire.derived_id(wire.child_id(job), "eval"),
        "EvalCreateIndex": job.pk,
        "JobCreateIndex": job.pk,
        "Index": job.pk,
        "Crunch": {"uuid": job.uuid, "reused": submission.reused},
    }
    return JsonResponse(body)


# --- evaluations and allocations -------------------------------------------------------------


def _child_by_eval(actor: Actor, eval_id: str) -> Job:
    for child in _recent_children(actor):
        if wire.derived_id(wire.child_id(child), "eval") == eval_id:
            return child
    raise NomadError(404, "eval not found")


def _recent_children(actor: Actor) -> Iterator[Job]:
    queryset = restrict_readable(
        Job.objects.filter(door="nomad", template_uuid__isnull=False), [actor.user]
    )
    yield from queryset.order_by("-id")[:ALLOC_SCAN]


def _allocation(actor: Actor, alloc_id: str) -> tuple[Job, Execution]:
    for child in _recent_children(actor):
        cid = wire.child_id(child)
        for execution in Execution.objects.filter(job_uuid=child.uuid):
            if wire.derived_id(cid, str(execution.attempt)) == alloc_id:
                return child, execution
    raise NomadError(404, "alloc not found")


@nomad_view(("GET",))
def evaluation(request: HttpRequest, eval_id: str) -> HttpResponse:
    actor = _actor(request)
    return JsonResponse(evaluation_json(_child_by_eval(actor, eval_id), actor))


@nomad_view(("GET",))
def evaluation_allocations(request: HttpRequest, eval_id: str) -> HttpResponse:
    actor = _actor(request)
    return JsonResponse(_allocations(_child_by_eval(actor, eval_id), actor), safe=False)


@nomad_view(("GET",))
def allocation(request: HttpRequest, alloc_id: str) -> HttpResponse:
    actor = _actor(request)
    job, execution = _allocation(actor, alloc_id)
    return JsonResponse(allocation_json(job, execution, actor) | {"Job": child_json(job, actor)})


# --- logs ------------------------------------------------------------------------------------


def _bool(value: str, name: str) -> bool:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise wire.bad(
        f"failed to parse {name} field to boolean: "
        f'strconv.ParseBool: parsing "{value}": invalid syntax'
    )


@nomad_view(("GET",))
def alloc_logs(request: HttpRequest, alloc_id: str) -> HttpResponseBase:
    actor = _actor(request)
    task = request.GET.get("task") or ""
    kind = request.GET.get("type") or ""
    if not task:
        raise wire.bad("must provide task name")
    if kind not in ("stdout", "stderr"):
        raise wire.bad("must provide log type (stdout/stderr)")
    follow = _bool(request.GET.get("follow", "false"), "follow")
    plain = _bool(request.GET.get("plain", "false"), "plain")
    origin = request.GET.get("origin") or "start"
    if origin not in ("start", "end"):
        raise wire.bad("origin must be start or end")
    try:
        offset = int(request.GET.get("offset") or 0)
    except ValueError:
        raise wire.bad(f"error parsing offset: {request.GET.get('offset')!r}") from None
    job, _ = _allocation(actor, alloc_id)
    template = _template_of(job)
    if template is not None and task != template.spec.get("task"):
        raise wire.bad(f'unknown task name "{task}"')
    path = f"alloc/logs/{task}.{kind}.0"
    # The task's stdout and stderr share one log in Crunch: it is served as stdout.
    text = job_log_text(job_uuid=job.uuid) if kind == "stdout" else ""
    if not follow or job.state not in (JobState.QUEUED, JobState.RUNNING):
        data = text.encode("utf-8")
        data = data[max(len(data) - offset, 0) :] if origin == "end" else data[offset:]
        if plain:
            return HttpResponse(data, content_type="text/plain; charset=utf-8")
        frame = {"Offset": len(data), "Data": base64.b64encode(data).decode(), "File": path}
        return HttpResponse(json.dumps(frame) if data else "", content_type="application/json")
    return StreamingHttpResponse(
        _followed(request, job.uuid, plain=plain, path=path),
        content_type="text/plain; charset=utf-8" if plain else "application/json",
    )


def _followed(request: HttpRequest, uuid: str, *, plain: bool, path: str) -> Any:
    """The log as it grows, until the job has ended and its log is drained (Nomad's own
    stream never closes; python-nomad waits for the close)."""
    from django.db import connections

    from api.follow_engine import Format, Start, follow_log, synchronous
    from jobs import follow

    class Frames(Format):
        offset = 0

        def chunk(self, seq: int, text: str) -> bytes:
            data = follow.chunk_lines(text).encode("utf-8")
            if plain:
                return data
            self.offset += len(data)
            frame = {"Offset": self.offset, "Data": base64.b64encode(data).decode(), "File": path}
            return json.dumps(frame).encode()

        def status(self, view: follow.JobView, status: follow.QueueStatus) -> bytes:
            return b""

        def end(self, view: follow.JobView | None) -> bytes:
            return b""

    stream = follow_log(uuid, Start(since=0, buffer_size=0), Frames(uuid), follow=True)
    connections.close_all()
    return stream if isinstance(request, ASGIRequest) else synchronous(stream)


@nomad_view(("GET", "POST", "PUT", "DELETE"))
def unknown(request: HttpRequest) -> HttpResponse:
    """Any other `/v1/` path: Nomad's plain-text 404, never Django's page or a redirect."""
    raise NomadError(404, "Invalid URL")
