"""Routes of the Ray-style door. Submit and list answer with and without the trailing slash
(Ray's client uses the slash, the seed does not): no redirect is ever involved."""

from __future__ import annotations

from django.urls import URLPattern, re_path

from api.ray import views

JOB = r"(?P<job_id>[^/]+)"

urlpatterns: list[URLPattern] = [
    re_path(r"^api/version$", views.version, name="ray-version"),
    re_path(r"^api/jobs/?$", views.jobs_collection, name="ray-jobs"),
    re_path(rf"^api/jobs/{JOB}$", views.job_item, name="ray-job"),
    re_path(rf"^api/jobs/{JOB}/logs$", views.job_logs, name="ray-job-logs"),
    re_path(rf"^api/jobs/{JOB}/stop$", views.job_stop, name="ray-job-stop"),
    re_path(
        r"^api/packages/(?P<protocol>[^/]+)/(?P<name>[^/]+)$", views.package, name="ray-package"
    ),
]
