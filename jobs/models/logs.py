"""A job's log as durable, ordered chunks (DESIGN: logs are durable and gap-free).

Each chunk has a sequence number unique per job, so followers can read the backlog and then
live chunks from any point without gaps or repeats.
"""

from __future__ import annotations

from django.db import models


class LogChunk(models.Model):
    job_uuid = models.CharField(max_length=27)
    seq = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    text = models.TextField()

    class Meta:
        db_table = "log_chunks"
        constraints = [  # noqa: RUF012  (Django reads Meta attributes; they are never mutated)
            models.UniqueConstraint(fields=["job_uuid", "seq"], name="log_chunks_job_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.job_uuid}#{self.seq}"
