"""Routes of the Nomad-style door: no trailing slashes and no redirects (python-nomad takes
a 3xx for success); `/v1/job/<id>` is matched by its suffix, as Nomad does, so dispatched
IDs (which contain `/`) work unescaped."""

from __future__ import annotations

from django.urls import URLPattern, re_path

from api.nomad import logs, views

JOB = r"(?P<job_id>.+?)"

urlpatterns: list[URLPattern] = [
    re_path(r"^v1/jobs$", views.jobs_collection, name="nomad-jobs"),
    re_path(rf"^v1/job/{JOB}/dispatch$", views.job_dispatch, name="nomad-dispatch"),
    re_path(rf"^v1/job/{JOB}/allocations$", views.job_allocations, name="nomad-job-allocs"),
    re_path(rf"^v1/job/{JOB}/evaluations$", views.job_evaluations, name="nomad-job-evals"),
    re_path(rf"^v1/job/{JOB}/summary$", views.job_summary, name="nomad-job-summary"),
    re_path(r"^v1/job/(?P<job_id>.+)$", views.job_item, name="nomad-job"),
    re_path(
        r"^v1/evaluation/(?P<eval_id>[^/]+)/allocations$",
        views.evaluation_allocations,
        name="nomad-eval-allocs",
    ),
    re_path(r"^v1/evaluation/(?P<eval_id>[^/]+)$", views.evaluation, name="nomad-eval"),
    re_path(r"^v1/allocation/(?P<alloc_id>[^/]+)$", views.allocation, name="nomad-alloc"),
    re_path(r"^v1/client/fs/logs/(?P<alloc_id>[^/]+)$", logs.alloc_logs, name="nomad-alloc-logs"),
    re_path(r"^v1/", views.unknown, name="nomad-unknown"),
]
