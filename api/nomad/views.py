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

import time
import uuid as uuidlib
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from api.nomad import wire
from api.nomad.base import (
    actor_of,
    body_of,
    child_by_eval,
    find_allocation,
    find_child,
    find_template,
    namespace_owner,
    namespace_param,
    nomad_view,
    template_of,
)
from api.nomad.shapes import (
    allocation_json,
    allocations,
    child_json,
    evaluation_json,
    namespace_name,
    summary,
    template_json,
)
from api.nomad.wire import NomadError
from jobs.keep.archives import collection_with_files
from jobs.models import Job, JobState, JobTemplate
from jobs.selectors import restrict_readable
from jobs.services.objects import Actor
from jobs.spec import JobSpec
from jobs.templates import (
    template_instances,
    template_instantiate,
    template_register,
    template_stop,
    templates_readable,
)

# --- jobs ----------------------------------------------------------------------------------


def register(request: HttpRequest, actor: Actor, url_id: str | None) -> HttpResponse:
    reg = wire.parse_register(body_of(request), url_id=url_id)
    owner = namespace_owner(actor, reg.namespace or namespace_param(request), write=True)
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
    actor = actor_of(request)
    if request.method != "GET":
        return register(request, actor, None)
    prefix = request.GET.get("prefix") or ""
    namespace = namespace_param(request)
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
    actor = actor_of(request)
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
    actor = actor_of(request)
    _, child = _job_for(actor, request, job_id)
    return JsonResponse(allocations(child, actor) if child else [], safe=False)


@nomad_view(("GET",))
def job_evaluations(request: HttpRequest, job_id: str) -> HttpResponse:
    actor = actor_of(request)
    _, child = _job_for(actor, request, job_id)
    return JsonResponse([evaluation_json(child, actor)] if child else [], safe=False)


@nomad_view(("GET",))
def job_summary(request: HttpRequest, job_id: str) -> HttpResponse:
    actor = actor_of(request)
    template, child = _job_for(actor, request, job_id)
    if template is None:
        assert child is not None
        template = template_of(child)
        if template is None:
            raise NomadError(404, "job not found")
    children = list(template_instances(template).only("state"))
    namespace = namespace_name(template.owner_uuid, actor)
    return JsonResponse(summary(template, children, namespace))


@nomad_view(("POST", "PUT"))
def job_dispatch(request: HttpRequest, job_id: str) -> HttpResponse:
    actor = actor_of(request)
    template = find_template(actor, request, job_id)
    if template is None:
        if find_child(actor, job_id) is not None:
            raise wire.bad(f'Specified job "{job_id}" is not a parameterized job')
        raise NomadError(404, "parameterized job not found")
    if template.stopped:
        raise wire.bad(f'Specified job "{job_id}" is stopped')
    namespace_owner(actor, namespace_param(request), write=True)  # ACL: write on the namespace
    dispatch = wire.parse_dispatch(
        body_of(request), query_token=request.GET.get("idempotency_token")
    )
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
        "NOMAD_NAMESPACE": namespace_name(template.owner_uuid, actor),
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


@nomad_view(("GET",))
def evaluation(request: HttpRequest, eval_id: str) -> HttpResponse:
    actor = actor_of(request)
    return JsonResponse(evaluation_json(child_by_eval(actor, eval_id), actor))


@nomad_view(("GET",))
def evaluation_allocations(request: HttpRequest, eval_id: str) -> HttpResponse:
    actor = actor_of(request)
    return JsonResponse(allocations(child_by_eval(actor, eval_id), actor), safe=False)


@nomad_view(("GET",))
def allocation(request: HttpRequest, alloc_id: str) -> HttpResponse:
    actor = actor_of(request)
    job, execution = find_allocation(actor, alloc_id)
    return JsonResponse(allocation_json(job, execution, actor) | {"Job": child_json(job, actor)})


@nomad_view(("GET", "POST", "PUT", "DELETE"))
def unknown(request: HttpRequest) -> HttpResponse:
    """Any other `/v1/` path: Nomad's plain-text 404, never Django's page or a redirect."""
    raise NomadError(404, "Invalid URL")
