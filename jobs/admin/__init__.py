"""Django admin: operators browse users, tokens, links, collections, repositories, nodes,
and steer jobs.

Jobs get more than the generic pages: a queue page in the dispatcher's order (what waits,
why it cannot be placed, what runs where), list filters and actions (cancel, change
priority, requeue as a new job), and a job page with its timings, its executions (each
attempt to run it), reuse events and a live tail of its log. Every change to a job goes
through `jobs.services.jobs`, acting as the staff user, so the API's validation and
bookkeeping apply; a refusal becomes an error message on the page, never a server error.
"""

import datetime as dt
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from jobs import savings
from jobs.admin import jobs, resources  # noqa: F401  (each module registers its pages)
from jobs.admin.pages import queue_snapshot  # the queue page's data, for its tests
from jobs.models import User

REUSE_PANEL_DAYS = 30

__all__ = ["queue_snapshot"]

admin.site.index_template = "admin/jobs/index.html"
admin.site.site_header = "Crunch administration"
admin.site.site_title = "Crunch admin"

_site_index = admin.site.index


def index(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
    """The home page, with what reuse saved over the last REUSE_PANEL_DAYS days by door."""
    since = (timezone.now() - dt.timedelta(days=REUSE_PANEL_DAYS)).date()
    extra = dict(extra_context or {})
    user = request.user
    if isinstance(user, User):  # a staff user of the admin: an admin of Crunch
        extra["reuse"] = savings.summary(user=user, by="door", since=since)
    extra["reuse_days"] = REUSE_PANEL_DAYS
    return _site_index(request, extra)


admin.site.index = index  # type: ignore[method-assign,assignment]
