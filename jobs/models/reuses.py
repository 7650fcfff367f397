"""A record of each time find_or_create handed back an existing job instead of a new one.

Reuse changes nothing on the job itself, so without this row nobody could tell afterwards
that a job was reused, by whom, or for which submission. The operator's job list filters on
it ("reused or not") and a job's page lists its reuse events.
"""

from __future__ import annotations

from django.db import models


class JobReuse(models.Model):
    job_uuid = models.CharField(max_length=27, db_index=True)
    reused_by_user_uuid = models.CharField(max_length=27)
    reused_by_client_uuid = models.CharField(max_length=27, null=True, blank=True)
    created_at = models.DateTimeField()
    # What the submission asked for: the version text it gave and its filters (None when it
    # used the legacy form, which derives them from the submitted job).
    supplied_script_version = models.CharField(max_length=255, null=True, blank=True)
    filters = models.JSONField(null=True, blank=True)
    # The door the submission came through, the project it was for, and the compute the
    # reuse avoided: the reused job's run time times the cores it asked for (0 while that
    # job has not finished).
    door = models.CharField(max_length=32, default="arvados")
    project_uuid = models.CharField(max_length=27, blank=True, default="")
    saved_core_seconds = models.FloatField(default=0.0)

    class Meta:
        db_table = "job_reuses"

    def __str__(self) -> str:
        return f"{self.job_uuid} reused by {self.reused_by_user_uuid}"
