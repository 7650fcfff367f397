"""Job templates: a registered job definition that never runs by itself, instantiated on
demand into jobs (Nomad's parameterized jobs and `dispatch`).

A template keeps what its instances run, in the core's terms (`spec`: the fields of a
JobSpec), the document its front door registered (`definition`, for reading it back), a
`version` bumped each time the spec changes, and whether it is stopped. Its instances are
ordinary jobs that name it (`Job.template_uuid`, `Job.template_version`) and the slot they
fill (`Job.template_slot`).

Its `schedule` says who makes instances (jobs/templates.py, `template_reconcile`):

- `on_demand`: only a client, by asking (Nomad's dispatch);
- `once`: `count` instances when a version is registered (a batch job's replicas);
- `each_node`: one instance on each suitable live node when a version is registered (ops);
- `every_node`: the same, and one on each suitable node that joins later (a daemon);
- `keep_running`: `count` instances, each replaced when it ends, until stopped (a service).
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from jobs import uuids


class Schedule(models.TextChoices):
    ON_DEMAND = "on_demand"
    ONCE = "once"
    EACH_NODE = "each_node"
    EVERY_NODE = "every_node"
    KEEP_RUNNING = "keep_running"


class JobTemplate(models.Model):
    uuid = models.CharField(max_length=27, unique=True)
    owner_uuid = models.CharField(max_length=27, db_index=True)
    door = models.CharField(max_length=32)
    name = models.CharField(max_length=255)
    version = models.PositiveIntegerField(default=0)
    spec = models.JSONField(default=dict)
    definition = models.JSONField(default=dict)
    stopped = models.BooleanField(default=False)
    schedule = models.CharField(max_length=16, choices=Schedule.choices, default=Schedule.ON_DEMAND)
    count = models.PositiveIntegerField(default=0)  # instances, for `once` and `keep_running`
    reuse = models.BooleanField(default=False)  # a `once` template may be an earlier one
    # The id its door shows for it, when that is not its name (Bacalhau's `j-<uuid>`).
    external_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    created_at = models.DateTimeField()
    modified_at = models.DateTimeField()
    modified_by_user_uuid = models.CharField(max_length=27, null=True, blank=True)

    class Meta:
        db_table = "job_templates"
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["door", "owner_uuid", "name"], name="job_templates_door_owner_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.door} template {self.name} v{self.version}"

    @classmethod
    def new_uuid(cls) -> str:
        return uuids.generate("JobTemplate")
