"""Executions: each attempt to run a job.

A job's run may take several attempts (a script's exit 111 asks for another, up to three),
and later doors run several replicas of one job; each attempt of each replica is one row:
where it ran, how it ended, and where its part of the job's log begins (`log_seq`, the
number of its first log chunk). The job keeps its own state; executions only record.

States: an execution starts Running and ends once, by compare-and-set
(`jobs.services.executions`): Complete (exit 0), Failed (another exit code, a timeout, a
run that could not start; `reason` says which), Cancelled (the job was cancelled) or Lost
(its worker stopped heartbeating; the sweeper says so in `reason`).
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from jobs import uuids
from jobs.models.base import ArvadosShape


class ExecutionState(models.TextChoices):
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    LOST = "Lost"


EXECUTION_FINAL_STATES = frozenset(
    {
        ExecutionState.COMPLETE,
        ExecutionState.FAILED,
        ExecutionState.CANCELLED,
        ExecutionState.LOST,
    }
)


class Execution(ArvadosShape, models.Model):
    uuid = models.CharField(max_length=27, unique=True)
    # Indexed by the unique constraint below, which starts with it.
    job_uuid = models.CharField(max_length=27)
    attempt = models.PositiveIntegerField()  # 1, 2, ... per job and replica
    replica = models.PositiveIntegerField(default=0)
    node_uuid = models.CharField(max_length=27, null=True, blank=True)
    hostname = models.CharField(max_length=255, null=True, blank=True)
    state = models.CharField(
        max_length=16, choices=ExecutionState.choices, default=ExecutionState.RUNNING
    )
    exit_code = models.IntegerField(null=True, blank=True)  # null until the script exits
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    log_seq = models.PositiveIntegerField(default=0)
    reason = models.TextField(null=True, blank=True)  # why it ended, when not a plain exit

    # Not an owned Arvados resource: read through its job (jobs/{uuid}/executions).
    COMMON_FIELDS: ClassVar[tuple[str, ...]] = ("uuid",)
    API_FIELDS: ClassVar[tuple[str, ...]] = (
        "job_uuid",
        "attempt",
        "replica",
        "node_uuid",
        "hostname",
        "state",
        "exit_code",
        "started_at",
        "finished_at",
        "log_seq",
        "reason",
    )

    class Meta:
        db_table = "executions"
        constraints = [  # noqa: RUF012  (Django reads Meta attributes; they are never mutated)
            models.UniqueConstraint(
                fields=["job_uuid", "replica", "attempt"], name="executions_job_replica_attempt"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_uuid} attempt {self.attempt}"

    @classmethod
    def new_uuid(cls) -> str:
        return uuids.generate(cls.class_name())
