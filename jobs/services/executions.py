"""Executions: each attempt to run a job (`jobs.models.executions`).

The runner starts one for every attempt (`execution_start`) and ends it when it knows how
the attempt ended (`execution_finish`); cancelling a job ends its Running executions
Cancelled, and the sweeper ends a lost worker's Lost (`executions_end_running`). Every end
is a compare-and-set on `state = Running`: the first to end an execution says how it ended,
and a later end (the runner noticing the cancel) changes nothing.
"""

from __future__ import annotations

from django.db.models import Max
from django.utils import timezone

from jobs.models import Execution, ExecutionState, Job, Node
from jobs.models.executions import EXECUTION_FINAL_STATES


def node_hostname(*, node_uuid: str) -> str | None:
    """The host name a node registered with, if any."""
    return Node.objects.filter(uuid=node_uuid).values_list("hostname", flat=True).first()


def execution_start(
    *,
    job: Job,
    node_uuid: str | None,
    hostname: str | None,
    log_seq: int,
    replica: int = 0,
) -> Execution:
    """A new Running execution of `job`: the next attempt of `replica`, on `node_uuid`
    (`hostname` defaults to the node's), whose log begins at chunk `log_seq`."""
    if hostname is None and node_uuid:
        hostname = node_hostname(node_uuid=node_uuid)
    last = Execution.objects.filter(job_uuid=job.uuid, replica=replica).aggregate(
        last=Max("attempt")
    )["last"]
    return Execution.objects.create(
        uuid=Execution.new_uuid(),
        job_uuid=job.uuid,
        attempt=(last or 0) + 1,
        replica=replica,
        node_uuid=node_uuid,
        hostname=hostname,
        state=ExecutionState.RUNNING,
        started_at=timezone.now(),
        log_seq=log_seq,
    )


def execution_finish(
    *, execution: Execution, state: str, exit_code: int | None, reason: str | None = None
) -> Execution:
    """End a Running execution: `state` (Complete, Failed, Cancelled, Lost), the script's
    exit code (None when it did not exit by itself) and why, when not a plain exit. An
    execution that already ended keeps how it ended. Returns it as stored."""
    if state not in EXECUTION_FINAL_STATES:
        raise ValueError(f"an execution cannot end {state!r}")
    ended = {
        "state": state,
        "exit_code": exit_code,
        "reason": reason,
        "finished_at": timezone.now(),
    }
    if Execution.objects.filter(pk=execution.pk, state=ExecutionState.RUNNING).update(**ended):
        for name, value in ended.items():  # what the row now holds: no need to read it back
            setattr(execution, name, value)
    else:
        execution.refresh_from_db()  # it had ended already: how, the row says
    return execution


def executions_end_running(*, job_uuid: str, state: str, reason: str) -> int:
    """End every Running execution of a job (cancelled: Cancelled; its worker lost: Lost)
    with `reason`. Returns how many ended."""
    if state not in EXECUTION_FINAL_STATES:
        raise ValueError(f"an execution cannot end {state!r}")
    return Execution.objects.filter(job_uuid=job_uuid, state=ExecutionState.RUNNING).update(
        state=state, reason=reason, finished_at=timezone.now()
    )
