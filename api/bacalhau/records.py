"""A Bacalhau job as read back: the core job template and its instances (each replica, each
node's copy, each restart of a service is a Crunch job with its executions), seen through
Bacalhau's states, executions and history.

Nothing here is stored: the state, the history and `Revision` are derived from the
instances' timestamps every time, so every state change the core records (an instance
queued, started, ended; a new version; a stop) is one history event and one revision."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from api.bacalhau import wire
from jobs.models import Execution, Job, JobState, JobTemplate, Node, Schedule
from jobs.services.objects import Actor
from jobs.services.runs import execution_log_text

COMPUTE_STATE = {
    "Running": "BidAccepted",
    "Complete": "Completed",
    "Failed": "Failed",
    "Cancelled": "Cancelled",
    "Lost": "Failed",
}
JOB_FIELDS = (
    "uuid",
    "state",
    "template_version",
    "template_slot",
    "created_at",
    "started_at",
    "finished_at",
    "output",
    "scheduling_status",
    "worker_node_uuid",
    "runtime_constraints",
)


@dataclass
class Event:
    time: dt.datetime
    level: str  # "JobLevel" or "ExecutionLevel"
    previous: str
    new: str
    message: str
    topic: str
    execution: Execution | None = None
    job: dict[str, Any] | None = None


@dataclass
class Record:
    template: JobTemplate
    namespace: str
    instances: list[dict[str, Any]]  # current version's, oldest first
    all_instances: list[dict[str, Any]]
    executions: dict[str, list[Execution]]  # by job uuid
    state: str = "Pending"
    message: str = ""
    events: list[Event] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.template.external_id or self.template.name

    @property
    def revision(self) -> int:
        return len(self.events)

    @property
    def modify_time(self) -> dt.datetime:
        return max([self.template.modified_at, *(e.time for e in self.events)])


def load(template: JobTemplate, actor: Actor, namespace: str) -> Record:
    rows = list(Job.objects.filter(template_uuid=template.uuid).order_by("id").values(*JOB_FIELDS))
    executions: dict[str, list[Execution]] = {}
    for execution in Execution.objects.filter(job_uuid__in=[r["uuid"] for r in rows]).order_by(
        "id"
    ):
        executions.setdefault(execution.job_uuid, []).append(execution)
    current = [r for r in rows if r["template_version"] == template.version]
    record = Record(template, namespace, current, rows, executions)
    record.state, record.message = _state(template, current)
    record.events = _events(record)
    return record


def _state(template: JobTemplate, instances: list[dict[str, Any]]) -> tuple[str, str]:
    states = [r["state"] for r in instances]
    if template.stopped:
        return "Stopped", "job stopped"
    if not states:
        return "Pending", ""
    final = all(s not in (JobState.QUEUED, JobState.RUNNING) for s in states)
    lasting = template.schedule in (Schedule.KEEP_RUNNING, Schedule.EVERY_NODE)
    if final and not lasting:
        if all(s == JobState.COMPLETE for s in states):
            return "Completed", ""
        if any(s == JobState.FAILED for s in states):
            failed = sum(s == JobState.FAILED for s in states)
            return "Failed", f"{failed} of {len(states)} executions failed"
        return "Stopped", "executions were cancelled"
    if any(s == JobState.RUNNING for s in states) or (final and lasting):
        return "Running", ""
    if any(s != JobState.QUEUED for s in states):
        return "Running", ""
    waiting = [r["scheduling_status"] for r in instances if r["scheduling_status"]]
    return "Queued", _placement_message(waiting[0]) if waiting else ""


def _placement_message(status: str) -> str:
    """The core's `no suitable node: requested 1, available 2, suitable 0; a: ...` in
    Bacalhau's words."""
    head, _, reasons = status.partition("; ")
    head = head.replace("no suitable node: requested", "not enough nodes to run job. requested:")
    head = head.replace(", available", ", available:").replace(", suitable", ", suitable:")
    return head + (". " + reasons if reasons else "")


def _events(record: Record) -> list[Event]:
    """Job-level and execution-level events, in time order."""
    t = record.template
    events = [
        Event(t.created_at, "JobLevel", "Undefined", "Pending", "Job submitted", "Submission")
    ]
    by_version: dict[int, dt.datetime] = {}
    for row in record.all_instances:
        version = row["template_version"] or 0
        by_version[version] = min(by_version.get(version, row["created_at"]), row["created_at"])
    for version in range(1, t.version + 1):
        when = by_version.get(version, t.modified_at)
        events.append(
            Event(when, "JobLevel", "", "", f"Job updated to version {version}", "Submission")
        )
    for row in record.all_instances:
        events.append(
            Event(
                row["created_at"],
                "ExecutionLevel",
                "Undefined",
                "New",
                "execution created",
                "Scheduling",
                job=row,
            )
        )
        for execution in record.executions.get(row["uuid"], []):
            events.append(
                Event(
                    execution.started_at,
                    "ExecutionLevel",
                    "New",
                    "BidAccepted",
                    "execution running",
                    "Execution",
                    execution,
                    row,
                )
            )
            if execution.finished_at is not None:
                state = COMPUTE_STATE.get(execution.state, "Failed")
                events.append(
                    Event(
                        execution.finished_at,
                        "ExecutionLevel",
                        "BidAccepted",
                        state,
                        execution.reason or f"execution {state.lower()}",
                        "Execution",
                        execution,
                        row,
                    )
                )
    events.extend(_job_transitions(record))
    events.sort(key=lambda e: (e.time, e.level != "JobLevel"))
    return events


def _job_transitions(record: Record) -> list[Event]:
    rows = record.instances
    found: list[Event] = []
    previous = "Pending"
    if rows:
        found.append(
            Event(min(r["created_at"] for r in rows), "JobLevel", previous, "Queued", "", "Queue")
        )
        previous = "Queued"
        started = [r["started_at"] for r in rows if r["started_at"]]
        if started:
            found.append(Event(min(started), "JobLevel", previous, "Running", "", "Execution"))
            previous = "Running"
    if record.state in ("Completed", "Failed", "Stopped"):
        ended = [r["finished_at"] for r in rows if r["finished_at"]]
        when = record.template.modified_at if record.template.stopped else None
        when = when or (max(ended) if ended else record.template.modified_at)
        found.append(Event(when, "JobLevel", previous, record.state, record.message, "Execution"))
    return found


# --- JSON ----------------------------------------------------------------------------------------


def job_json(record: Record) -> dict[str, Any]:
    t = record.template
    document = dict(t.definition)
    document.pop("ID", None)
    body = {
        **document,
        "ID": record.id,
        "Name": t.name,
        "Namespace": record.namespace,
        "Type": wire.TYPE_OF_SCHEDULE.get(t.schedule, "batch"),
        "Count": t.count
        if t.schedule in (Schedule.ONCE, Schedule.KEEP_RUNNING)
        else document.get("Count", 1),
        "State": {"StateType": record.state, "Message": record.message},
        "Version": t.version,
        "Revision": record.revision,
        "CreateTime": wire.nanos(t.created_at),
        "ModifyTime": wire.nanos(record.modify_time),
    }
    meta = dict(body.get("Meta") or {})
    meta["bacalhau.org/requester.id"] = "crunch"
    meta["crunch.template"] = t.uuid
    body["Meta"] = meta
    return body


def node_id(node_uuid: str | None) -> str:
    return wire.derived_id("n", node_uuid) if node_uuid else ""


def execution_items(record: Record, *, with_output: bool) -> list[dict[str, Any]]:
    """One item per core execution of every instance, and one `New` item per instance not
    started yet, newest version's first... in creation order."""
    items = []
    t = record.template
    task = (t.definition.get("Tasks") or [{}])[0]
    resources = t.spec.get("runtime_constraints") or {}
    allocated = {
        "CPU": float(resources.get("vcpus") or 0),
        "Memory": int(resources.get("ram") or 0),
        "Disk": 0,
        "GPU": int(resources.get("gpus") or 0),
    }
    for row in record.all_instances:
        runs = record.executions.get(row["uuid"], [])
        base = {
            "Namespace": record.namespace,
            "EvalID": wire.derived_id("eval", row["uuid"])[5:],
            "Name": row["template_slot"] or "",
            "JobID": record.id,
            "Job": None,
            "AllocatedResources": {"Tasks": {task.get("Name", "main"): allocated}},
            "PreviousExecution": "",
            "NextExecution": "",
            "FollowupEvalID": "",
            "Crunch": {"job_uuid": row["uuid"], "version": row["template_version"]},
        }
        if not runs:
            final = row["state"] not in (JobState.QUEUED, JobState.RUNNING)
            items.append(
                base
                | {
                    "ID": wire.derived_id("e", row["uuid"]),
                    "NodeID": "",
                    "DesiredState": {
                        "StateType": "Stopped" if final else "Pending",
                        "Message": row["scheduling_status"] or "",
                    },
                    "ComputeState": {
                        "StateType": "Cancelled" if final else "New",
                        "Message": row["scheduling_status"] or "",
                    },
                    "PublishedResult": {"Type": "", "Params": {}},
                    "RunOutput": None,
                    "Revision": 1,
                    "CreateTime": wire.nanos(row["created_at"]),
                    "ModifyTime": wire.nanos(row["created_at"]),
                }
            )
            continue
        for index, execution in enumerate(runs):
            final = execution.finished_at is not None
            output = None
            if with_output and final:
                output = wire.run_output(
                    execution_log_text(
                        execution=execution,
                        following=runs[index + 1] if index + 1 < len(runs) else None,
                    ),
                    exit_code=execution.exit_code,
                    reason=execution.reason,
                )
            published = {"Type": "", "Params": {}}
            if final and execution.state == "Complete" and row["output"]:
                published = {"Type": "local", "Params": {"PDH": row["output"]}}
            items.append(
                base
                | {
                    "ID": wire.derived_id("e", execution.uuid),
                    "NodeID": node_id(execution.node_uuid),
                    "DesiredState": {
                        "StateType": "Stopped" if final else "Running",
                        "Message": "execution completed" if final else "",
                    },
                    "ComputeState": {
                        "StateType": COMPUTE_STATE.get(execution.state, "Failed"),
                        "Message": execution.reason or "",
                    },
                    "PublishedResult": published,
                    "RunOutput": output,
                    "PreviousExecution": wire.derived_id("e", runs[index - 1].uuid)
                    if index
                    else "",
                    "Revision": 3 if final else 2,
                    "CreateTime": wire.nanos(execution.started_at),
                    "ModifyTime": wire.nanos(execution.finished_at or execution.started_at),
                }
            )
    return items


def history_items(
    record: Record, *, event_type: str, execution_id: str, node: str
) -> list[dict[str, Any]]:
    items = []
    for revision, event in enumerate(record.events, start=1):
        if event_type == "job" and event.level != "JobLevel":
            continue
        if event_type == "execution" and event.level != "ExecutionLevel":
            continue
        item: dict[str, Any] = {
            "Type": event.level,
            "JobID": record.id,
            "NewRevision": revision,
            "Event": {
                "Message": event.message,
                "Topic": event.topic,
                "Timestamp": wire.rfc3339(event.time),
            },
            "Time": wire.rfc3339(event.time),
        }
        if event.level == "JobLevel":
            item["JobState"] = {
                "Previous": event.previous or record.state,
                "New": event.new or record.state,
            }
        else:
            execution = event.execution
            eid = (
                wire.derived_id("e", execution.uuid)
                if execution is not None
                else wire.derived_id("e", (event.job or {}).get("uuid", ""))
            )
            nid = node_id(execution.node_uuid if execution is not None else None)
            if execution_id and eid != execution_id:
                continue
            if node and nid != node:
                continue
            item |= {
                "ExecutionID": eid,
                "NodeID": nid,
                "ExecutionState": {"Previous": event.previous, "New": event.new},
            }
        items.append(item)
    return items


def results(record: Record) -> list[dict[str, Any]]:
    found = []
    for row in record.instances:
        if row["state"] == JobState.COMPLETE and row["output"]:
            found.append(
                {"Type": "local", "Params": {"PDH": row["output"], "URL": f"keep:{row['output']}"}}
            )
    return found


def node_json(node: Node, live: bool) -> dict[str, Any]:
    from jobs.placement import NodeView

    view = NodeView.of(node)
    nid = node_id(node.uuid)
    return {
        "Info": {
            "NodeID": nid,
            "NodeType": "Compute",
            "Labels": view.labels,
            "ComputeNodeInfo": {
                "ExecutionEngines": ["docker"],
                "Publishers": ["local"],
                "StorageSources": ["urlDownload", "crunch"],
                "MaxCapacity": {"CPU": view.cpus, "Memory": view.ram_bytes, "GPU": view.gpus},
                "AvailableCapacity": {"CPU": view.cpus, "Memory": view.ram_bytes, "GPU": view.gpus},
                "RunningExecutions": 0,
                "MaxJobRequirements": {
                    "CPU": view.cpus,
                    "Memory": view.ram_bytes,
                    "GPU": view.gpus,
                },
            },
            "BacalhauVersion": {"GitVersion": "crunch"},
        },
        "Membership": "APPROVED",
        "Connection": "CONNECTED" if live else "DISCONNECTED",
        "Crunch": {"uuid": node.uuid, "hostname": node.hostname, "slots": view.slots},
    }
