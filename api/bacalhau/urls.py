"""Routes of the Bacalhau-style door, all without trailing slashes (as upstream)."""

from __future__ import annotations

from django.urls import URLPattern, re_path

from api.bacalhau import views

BASE = r"^api/v1/orchestrator"
JOB = r"(?P<job_id>[^/]+)"

urlpatterns: list[URLPattern] = [
    re_path(rf"{BASE}/jobs$", views.jobs, name="bacalhau-jobs"),
    re_path(rf"{BASE}/jobs/{JOB}$", views.job, name="bacalhau-job"),
    re_path(rf"{BASE}/jobs/{JOB}/executions$", views.executions, name="bacalhau-executions"),
    re_path(rf"{BASE}/jobs/{JOB}/history$", views.history, name="bacalhau-history"),
    re_path(rf"{BASE}/jobs/{JOB}/logs$", views.logs_text, name="bacalhau-logs"),
    re_path(rf"{BASE}/jobs/{JOB}/results$", views.results, name="bacalhau-results"),
    re_path(rf"{BASE}/nodes$", views.nodes, name="bacalhau-nodes"),
    re_path(rf"{BASE}/nodes/(?P<node_id>[^/]+)$", views.node, name="bacalhau-node"),
    re_path(r"^api/v1/version$", views.version, name="bacalhau-version"),
    re_path(r"^api/v1/agent/version$", views.version, name="bacalhau-agent-version"),
    re_path(r"^api/v1/agent/alive$", views.alive, name="bacalhau-agent-alive"),
]
