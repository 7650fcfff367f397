"""The Nomad-style door in-process: whatever a register or dispatch body, a path or a query
holds, the answer is a 2xx or a 4xx in plain text (never a 5xx), and a refusal creates
nothing; routes never redirect."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.models import Job, JobTemplate

pytestmark = pytest.mark.django_db

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["\x00", "batch", "raw_exec", "required", "${meta.x}", "../x", "local"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
task = st.fixed_dictionaries(
    {},
    optional={
        "Name": values,
        "Driver": st.sampled_from(["raw_exec", "docker", "exec", "java"]) | values,
        "Config": st.fixed_dictionaries({}, optional={"command": values, "args": values}),
        "Env": values,
        "Resources": values,
        "DispatchPayload": values,
        "Constraints": values,
        "Artifacts": values,
    },
)
jobs = st.fixed_dictionaries(
    {"ID": st.text(max_size=20) | values},
    optional={
        "Type": st.sampled_from(["batch", "service"]) | values,
        "Meta": values,
        "Namespace": values,
        "ParameterizedJob": st.fixed_dictionaries(
            {}, optional={"Payload": values, "MetaRequired": values, "MetaOptional": values}
        )
        | values,
        "TaskGroups": st.lists(st.fixed_dictionaries({"Tasks": st.lists(task, max_size=2)}))
        | values,
        "Constraints": values,
    },
)
GOOD = {
    "Job": {
        "ID": "fuzzed",
        "Type": "batch",
        "ParameterizedJob": {"Payload": "optional", "MetaOptional": ["k"]},
        "TaskGroups": [
            {"Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": "true"}}]}
        ],
    }
}


def _headers(token: str) -> dict[str, str]:
    return {"HTTP_X_NOMAD_TOKEN": token}


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(job=jobs | values)
def test_any_register_body_is_a_4xx_or_a_template(client: Any, active: Any, job: Any) -> None:
    _, token = active
    before = JobTemplate.objects.count()
    body = {"Job": job} if isinstance(job, dict) else job
    response = client.post(
        "/v1/jobs", data=json.dumps(body), content_type="application/json", **_headers(token)
    )
    assert response.status_code < 500, response.content
    if response.status_code != 200:
        assert 400 <= response.status_code < 500
        assert response["Content-Type"].startswith("text/plain")
        assert JobTemplate.objects.count() == before


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "Payload": values | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
            "Meta": values,
            "idempotency_token": values,
            "IdempotencyToken": values,
            "IdPrefixTemplate": values,
        },
    )
    | values,
    token=st.none() | st.text(max_size=10),
)
def test_any_dispatch_body_is_a_4xx_or_a_job(
    client: Any, active: Any, body: Any, token: str | None
) -> None:
    _, api_token = active
    client.post(
        "/v1/jobs", data=json.dumps(GOOD), content_type="application/json", **_headers(api_token)
    )
    before = Job.objects.count()
    query = f"?idempotency_token={token}" if token else ""
    response = client.put(
        f"/v1/job/fuzzed/dispatch{query}",
        data=json.dumps(body),
        content_type="application/json",
        **_headers(api_token),
    )
    assert response.status_code < 500, response.content
    if response.status_code != 200:
        assert 400 <= response.status_code < 500
        assert Job.objects.count() == before


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/",
        "/v1/job/nope",
        "/v1/job/nope/allocations",
        "/v1/job/a/b/c/dispatch",
        "/v1/evaluation/x",
        "/v1/allocation/x",
        "/v1/client/fs/logs/x?task=t&type=stdout",
        "/v1/client/fs/logs/x?task=t&type=other",
        "/v1/client/fs/logs/x?type=stdout",
        "/v1/client/fs/logs/x?task=t&type=stdout&follow=maybe",
        "/v1/client/fs/logs/x?task=t&type=stdout&origin=middle",
    ],
)
def test_paths_answer_4xx_in_text_without_redirects(client: Any, active: Any, path: str) -> None:
    _, token = active
    response = client.get(path, **_headers(token))
    assert 400 <= response.status_code < 500 and response.status_code not in (301, 302)
    assert response["Content-Type"].startswith("text/plain")
    assert response["X-Nomad-Index"]


def test_without_a_token_it_is_permission_denied(client: Any) -> None:
    response = client.get("/v1/jobs")
    assert response.status_code == 403 and b"Permission denied" in response.content
