"""Django admin: operators browse users, tokens, links, collections, repositories, nodes,
and steer jobs.

Jobs get more than the generic pages: a queue page in the dispatcher's order (what waits,
why it cannot be placed, what runs where), list filters and actions (cancel, change
priority, requeue as a new job), and a job page with its timings, its executions (each
attempt to run it), reuse events and a live tail of its log. Every change to a job goes
through `jobs.services.jobs`, acting as the staff user, so the API's validation and
bookkeeping apply; a refusal becomes an error message on the page, never a server error.
"""

from django.contrib import admin

from jobs.admin import jobs, resources  # noqa: F401  (each module registers its pages)
from jobs.admin.pages import queue_snapshot  # the queue page's data, for its tests

__all__ = ["queue_snapshot"]

admin.site.index_template = "admin/jobs/index.html"
admin.site.site_header = "Crunch administration"
admin.site.site_title = "Crunch admin"
