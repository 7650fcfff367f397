"""Jobs: what ran, exactly. A job runs either `crunch_scripts/<script>` from a git repository
at an exact commit (the Arvados shape), or a command (an argv) over a source tree: an uploaded
directory stored as a collection (`working_dir`, a portable data hash), a git commit, or none.
Both carry parameters, an exact image, an environment, resources and constraints; `reuse_key`
is the digest of everything that decides the result (jobs/spec.py), so identical work is found
with one indexed lookup whichever front door submitted it.

States (spec §2.10): a job is created Queued (or, for runners recording work already done,
in any state). The edges between states, what each state implies and the compare-and-set
that takes an edge are in `jobs.transitions`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models

from jobs.models.base import ArvadosModel


class JobState(models.TextChoices):
    QUEUED = "Queued"
    RUNNING = "Running"
    CANCELLED = "Cancelled"
    FAILED = "Failed"
    COMPLETE = "Complete"


STATES = tuple(JobState.values)
FINAL_STATES = frozenset({JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
DESCRIPTION_MAX = 524288


def __getattr__(name: str) -> Any:
    # The edge table lives in jobs.transitions (which imports this module); it stays
    # importable from here for older callers.
    if name == "ALLOWED_TRANSITIONS":
        from jobs.transitions import ALLOWED_TRANSITIONS

        return ALLOWED_TRANSITIONS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Job(ArvadosModel):
    submit_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    priority = models.IntegerField(default=0)
    # Null for command jobs (as are repository and script_version when they run no git tree).
    script = models.CharField(max_length=255, null=True, blank=True)
    script_parameters = models.JSONField(null=True, blank=True)
    script_parameters_digest = models.CharField(max_length=32, db_index=True)
    script_version = models.CharField(max_length=255, null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by_client_uuid = models.CharField(max_length=255, null=True, blank=True)
    cancelled_by_user_uuid = models.CharField(max_length=255, null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    output = models.CharField(max_length=255, null=True, blank=True)
    success = models.BooleanField(null=True, blank=True)
    running = models.BooleanField(null=True, blank=True, default=False)
    state = models.CharField(max_length=16, null=True, blank=True)
    is_locked_by_uuid = models.CharField(max_length=255, null=True, blank=True)
    log = models.CharField(max_length=255, null=True, blank=True)
    runtime_constraints = models.JSONField(null=True, blank=True)
    tasks_summary = models.JSONField(null=True, blank=True)
    nondeterministic = models.BooleanField(null=True, blank=True)
    repository = models.CharField(max_length=255, null=True, blank=True)
    supplied_script_version = models.CharField(max_length=255, null=True, blank=True)
    arvados_sdk_version = models.CharField(max_length=40, null=True, blank=True)
    docker_image_locator = models.CharField(max_length=255, null=True, blank=True)
    description = models.TextField(null=True, blank=True)
    components = models.JSONField(null=True, blank=True)
    # Execution bookkeeping (not in the original): the worker node running the job, and why
    # a queued job cannot be placed on any registered node (null when it can).
    worker_node_uuid = models.CharField(max_length=27, null=True, blank=True)
    scheduling_status = models.TextField(null=True, blank=True)
    # Command jobs (Crunch extensions): the argv, the collection it runs over (a writable
    # copy is its working directory), its environment; labels and meta describe the job and
    # are not part of what decides its result.
    command = models.JSONField(null=True, blank=True)
    working_dir = models.CharField(max_length=255, null=True, blank=True)
    environment = models.JSONField(null=True, blank=True)
    labels = models.JSONField(null=True, blank=True)
    meta = models.JSONField(null=True, blank=True)
    # sha256 of the canonical identity (jobs/spec.py); the lookup of exact reuse.
    reuse_key = models.CharField(max_length=64, null=True, blank=True, db_index=True)
    # The front door the job came through (arvados, bacalhau, nomad, ray): provenance.
    door = models.CharField(max_length=32, default="arvados")
    # pip requirement lines installed for the run (normalised), and what the worker's
    # virtualenv resolved them to ({name: version}).
    python_requirements = models.JSONField(null=True, blank=True)
    resolved_packages = models.JSONField(null=True, blank=True)
    # An instance of a job template (jobs/templates.py): which, and which version of it.
    template_uuid = models.CharField(max_length=27, null=True, blank=True, db_index=True)
    template_version = models.PositiveIntegerField(null=True, blank=True)
    # The slot of the template's schedule it fills: `r<n>` (replica n) or `n:<node uuid>`.
    template_slot = models.CharField(max_length=64, null=True, blank=True)
    # A client's idempotency key, unique among all jobs: the same key never makes a second
    # job, whatever races (`<template uuid>:<token>` for template instances).
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    # Variables the run also sets that name this instance (its ids), not what it computes:
    # not part of the identity, so identical work submitted twice is still reused.
    run_environment = models.JSONField(null=True, blank=True)
    # An output marked bad by an admin: never reused again (jobs/provenance.py invalidate).
    invalidated_at = models.DateTimeField(null=True, blank=True)
    invalidated_by_user_uuid = models.CharField(max_length=27, null=True, blank=True)
    invalidated_reason = models.TextField(null=True, blank=True)

    API_FIELDS: ClassVar[tuple[str, ...]] = (
        "submit_id",
        "priority",
        "script",
        "script_parameters",
        "script_version",
        "cancelled_at",
        "cancelled_by_client_uuid",
        "cancelled_by_user_uuid",
        "started_at",
        "finished_at",
        "output",
        "success",
        "running",
        "state",
        "is_locked_by_uuid",
        "log",
        "runtime_constraints",
        "tasks_summary",
        "nondeterministic",
        "repository",
        "supplied_script_version",
        "arvados_sdk_version",
        "docker_image_locator",
        "queue_position",
        "node_uuids",
        "description",
        "components",
        "scheduling_status",
        "command",
        "working_dir",
        "environment",
        "labels",
        "meta",
        "door",
        "invalidated_at",
        "invalidated_by_user_uuid",
        "invalidated_reason",
        "python_requirements",
        "resolved_packages",
        "template_uuid",
        "template_version",
        "run_environment",
    )
    CLIENT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "submit_id",
            "priority",
            "script",
            "script_parameters",
            "script_version",
            "cancelled_at",
            "cancelled_by_client_uuid",
            "cancelled_by_user_uuid",
            "started_at",
            "finished_at",
            "output",
            "success",
            "running",
            "state",
            "is_locked_by_uuid",
            "log",
            "runtime_constraints",
            "tasks_summary",
            "nondeterministic",
            "repository",
            "supplied_script_version",
            "description",
            "components",
            "owner_uuid",
            "uuid",
            "command",
            "working_dir",
            "environment",
            "labels",
            "meta",
            "python_requirements",
        }
    )
    # Server-only attributes are dropped without an error (spec §2.13); computed ones too.
    IGNORED_FIELDS: ClassVar[frozenset[str]] = ArvadosModel.IGNORED_FIELDS | frozenset(
        {
            "arvados_sdk_version",
            "docker_image_locator",
            "queue_position",
            "node_uuids",
            "scheduling_status",
            "door",
            "invalidated_at",
            "invalidated_by_user_uuid",
            "invalidated_reason",
            "resolved_packages",
            "template_uuid",
            "template_version",
            "run_environment",
        }
    )
    HASH_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "script_parameters",
            "runtime_constraints",
            "tasks_summary",
            "components",
            "environment",
            "labels",
            "meta",
        }
    )
    # JSON attributes that hold an array of strings (null when absent).
    ARRAY_FIELDS: ClassVar[frozenset[str]] = frozenset({"command", "python_requirements"})
    # Hidden from clients and from filters (spec §1.5, §1.8).
    FILTER_EXCLUDE: ClassVar[tuple[str, ...]] = ("script_parameters_digest", "reuse_key")

    class Meta:
        db_table = "jobs"
        indexes = [  # noqa: RUF012  (Django reads Meta attributes; they are never mutated)
            # The reuse lookup: one indexed query on the job's identity.
            models.Index(
                fields=["repository", "script", "script_parameters_digest", "state"],
                name="jobs_reuse_identity",
            ),
            # The queue: state, then run order.
            models.Index(fields=["state", "-priority", "created_at"], name="jobs_queue_order"),
            # Provenance: which jobs produced a collection.
            models.Index(fields=["output"], name="jobs_output"),
        ]

    @property
    def queue_position(self) -> int | None:
        return 0 if self.state == JobState.QUEUED else None
