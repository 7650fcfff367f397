"""The Ray-style door in-process: what any body or header gets (a 4xx in plain text, or a
job; never a 5xx, and a refusal creates nothing), and the shapes Ray's client builds
dataclasses from (exact keys)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.models import Collection, Job

pytestmark = pytest.mark.django_db

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["\x00", "app-1", "gcs://_ray_pkg_0123456789abcdef.zip", "keep:x", "-e x"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
fields = st.sampled_from(
    [
        "entrypoint",
        "submission_id",
        "runtime_env",
        "metadata",
        "entrypoint_num_cpus",
        "entrypoint_num_gpus",
        "entrypoint_memory",
        "entrypoint_resources",
        "entrypoint_label_selector",
        "bogus",
    ]
)
runtime_envs = st.fixed_dictionaries(
    {},
    optional={
        "working_dir": values,
        "env_vars": values,
        "pip": values,
        "conda": values,
    },
)
bodies = st.dictionaries(fields, values, max_size=6) | st.fixed_dictionaries(
    {"entrypoint": st.text(max_size=30), "runtime_env": runtime_envs},
    optional={"entrypoint_num_cpus": values, "entrypoint_memory": values, "metadata": values},
)
header_values = st.text(max_size=20).filter(lambda t: "\n" not in t and "\r" not in t)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, tenant=st.none() | header_values, pool=st.none() | header_values)
def test_any_body_or_header_is_a_4xx_or_a_job(
    client: Any, active: Any, body: Any, tenant: Any, pool: Any
) -> None:
    _, token = active
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if tenant is not None:
        headers["HTTP_X_TENANT_ID"] = tenant
    if pool is not None:
        headers["HTTP_X_POOL_LABEL"] = pool
    before = Job.objects.count()
    response = client.post(
        "/api/jobs/", data=json.dumps(body), content_type="application/json", **headers
    )
    assert response.status_code < 500, response.content
    if response.status_code == 200:
        assert set(response.json()) == {"job_id", "submission_id"}
        assert Job.objects.count() == before + 1
    else:
        assert 400 <= response.status_code < 500
        assert response["Content-Type"].startswith("text/plain")
        assert Job.objects.count() == before


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200), name=st.text(max_size=30))
def test_any_package_upload_is_a_4xx_or_a_collection(
    client: Any, active: Any, raw: bytes, name: str
) -> None:
    _, token = active
    before = Collection.objects.count()
    response = client.put(
        f"/api/packages/gcs/{name or 'x'}",
        data=raw,
        content_type="",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code < 500
    if response.status_code != 200:
        assert Collection.objects.count() == before


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ({"../up.py": b"x"}, "not a relative path"),
        ({"/abs.py": b"x"}, "not a relative path"),
        ({"a/./b.py": b"x"}, "not a relative path"),
        ({"a": b"x", "a/b": b"y"}, "below a file of that name"),
    ],
)
def test_unsafe_archives_are_refused(client: Any, active: Any, members: Any, words: str) -> None:
    _, token = active
    response = client.put(
        "/api/packages/gcs/_ray_pkg_0123456789abcdef.zip",
        data=_zip(members),
        content_type="",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 400 and words in response.content.decode()


def test_a_symbolic_link_in_an_archive_is_refused(client: Any, active: Any) -> None:
    _, token = active
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        link = zipfile.ZipInfo("link")
        link.external_attr = (0o120777) << 16
        archive.writestr(link, "/etc/passwd")
    response = client.put(
        "/api/packages/gcs/_ray_pkg_0123456789abcdef.zip",
        data=out.getvalue(),
        content_type="",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 400 and "symbolic link" in response.content.decode()


def test_authentication_and_exact_shapes(client: Any, active: Any) -> None:
    _, token = active
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert client.get("/api/jobs/").status_code == 401
    assert client.get("/api/version").json()["version"] == "4"
    created = client.post(
        "/api/jobs",
        data=json.dumps({"entrypoint": "echo hi", "runtime_env": {}, "metadata": {}}),
        content_type="application/json",
        **auth,
    )
    assert created.status_code == 200 and set(created.json()) == {"job_id", "submission_id"}
    job_id = created.json()["job_id"]
    assert client.get(f"/api/jobs/{job_id}/logs", **auth).json().keys() == {"logs"}
    info = client.get(f"/api/jobs/{job_id}", **auth).json()
    assert info["status"] == "PENDING" and info["type"] == "SUBMISSION"
    assert info["message"] == "Job has not started yet."
    assert client.post(f"/api/jobs/{job_id}/stop", **auth).json() == {"stopped": True}
    assert client.delete(f"/api/jobs/{job_id}", **auth).json() == {"deleted": True}
    missing = client.get("/api/jobs/nope", **auth)
    assert missing.status_code == 404 and missing.content == b"Job nope does not exist"
