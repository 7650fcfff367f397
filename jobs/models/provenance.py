"""What provenance and the reuse summary read: the collections each job read, and reuse
outcomes rolled up per day.

`JobInput` is written once when a job is created (jobs/provenance.py says which of its
attributes name collections), so "which jobs read this collection" is one indexed query
instead of a scan of every job's parameters. `ReuseTally` counts the reuse outcomes of
submissions that asked for reuse, per day, user, project, door and (for misses) reason, with
the compute each hit avoided: the summary reads a few rows per day, whatever the number of
jobs.
"""

from __future__ import annotations

from django.db import models


class JobInput(models.Model):
    job_uuid = models.CharField(max_length=27, db_index=True)
    portable_data_hash = models.CharField(max_length=255, db_index=True)
    # Where the job names it: "parameter" (with the parameter's name in `name`) or
    # "working_dir" (the uploaded directory it runs in).
    kind = models.CharField(max_length=16)
    name = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        db_table = "job_inputs"

    def __str__(self) -> str:
        return f"{self.job_uuid} reads {self.portable_data_hash}"


class ReuseTally(models.Model):
    day = models.DateField()
    user_uuid = models.CharField(max_length=27)
    project_uuid = models.CharField(max_length=27)
    door = models.CharField(max_length=32)
    hit = models.BooleanField()
    reason = models.CharField(max_length=255, blank=True, default="")  # a miss's reason
    count = models.BigIntegerField(default=0)
    saved_core_seconds = models.FloatField(default=0.0)

    class Meta:
        db_table = "job_reuse_tallies"
        constraints = [  # noqa: RUF012
            models.UniqueConstraint(
                fields=["day", "user_uuid", "project_uuid", "door", "hit", "reason"],
                name="job_reuse_tallies_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.door} {'hit' if self.hit else 'miss'} x{self.count}"
