"""Crunch's records in Nomad's read-back shapes: a parameterized job (a job template) and
its list stub and summary, a dispatched job, its evaluation (the placement verdict, with
AllocationMetric when no live node fits) and its allocations (the job's executions)."""

from __future__ import annotations

from typing import Any

from api.nomad import wire
from api.nomad.base import (
    template_of,
)
from jobs import placement
from jobs.exceptions import InvalidRequest
from jobs.models import Execution, Group, Job, JobState, JobTemplate
from jobs.services.objects import Actor
from jobs.templates import (
    template_instances,
)

# --- shapes --------------------------------------------------------------------------------


def namespace_name(owner_uuid: str, actor: Actor) -> str:
    if owner_uuid == actor.user.uuid:
        return "default"
    group = Group.objects.filter(uuid=owner_uuid).first()
    return group.name if group is not None and group.name else owner_uuid


def summary(template: JobTemplate, children: list[Job], namespace: str) -> dict[str, Any]:
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
    namespace = namespace_name(template.owner_uuid, actor)
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
            "JobSummary": summary(template, children, namespace),
        }
        if meta:
            stub_json["Meta"] = document.get("Meta") or {}
        return stub_json
    return document | common | {"Dispatched": False, "Meta": document.get("Meta") or {}}


def child_json(job: Job, actor: Actor) -> dict[str, Any]:
    template = template_of(job)
    document = dict(template.definition) if template is not None else {}
    cid = wire.child_id(job)
    return document | {
        "ID": cid,
        "Name": cid,
        "ParentID": template.name if template is not None else "",
        "Dispatched": True,
        "Namespace": namespace_name(job.owner_uuid, actor),
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


def metric(job: Job) -> dict[str, Any] | None:
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
    template = template_of(job)
    group = template.spec.get("group", "") if template is not None else ""
    has_run = Execution.objects.filter(job_uuid=job.uuid).exists()
    failed = metric(job) if job.state == JobState.QUEUED and not has_run else None
    placed = has_run or job.state != JobState.QUEUED
    status = "complete" if placed or failed is not None else "pending"
    return {
        "ID": wire.derived_id(cid, "eval"),
        "Namespace": namespace_name(job.owner_uuid, actor),
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
    template = template_of(job)
    group = template.spec.get("group", "") if template is not None else ""
    task = template.spec.get("task", "") if template is not None else ""
    client_status = wire.CLIENT_STATUS.get(execution.state, "pending")
    ended = execution.finished_at is not None
    failed = execution.state in ("Failed", "Lost")
    return {
        "ID": wire.derived_id(cid, str(execution.attempt)),
        "EvalID": wire.derived_id(cid, "eval"),
        "Name": f"{cid}.{group}[0]",
        "Namespace": namespace_name(job.owner_uuid, actor),
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
                "StartedAt": iso(execution.started_at),
                "FinishedAt": iso(execution.finished_at),
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


def iso(moment: Any) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None


def allocations(job: Job, actor: Actor) -> list[dict[str, Any]]:
    executions = Execution.objects.filter(job_uuid=job.uuid).order_by("attempt")
    return [allocation_json(job, e, actor) for e in executions]
