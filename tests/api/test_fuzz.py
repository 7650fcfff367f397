"""Property: whatever arrives in filters, order, select, where, limit or a body, the answer
is a 2xx or a 4xx in the Arvados error shape; never a 5xx, never a traceback."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.django_db

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    # Characters databases treat specially, often enough to be tried every run.
    | st.sampled_from(["\x00", "a\x00b", "%", "_", "\\", "'", "9999-12-31", "2**70"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
attribute = st.sampled_from(
    [
        "name",
        "link_class",
        "uuid",
        "created_at",
        "id",
        "properties",
        "any",
        "head_uuid",
        "bogus",
        "owner_uuid",
    ]
)
operator = st.sampled_from(
    [
        "=",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "like",
        "ilike",
        "in",
        "not in",
        "is_a",
        "@@",
        "exists",
        "IN",
        "contains",
    ]
)
filter_triples = st.lists(
    st.tuples(attribute | json_values, operator | json_values, json_values).map(list), max_size=3
)
param_value = json_values.map(json.dumps) | st.text(max_size=30) | filter_triples.map(json.dumps)

FUZZ_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check(response):
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        data = response.json()
        assert isinstance(data["errors"], list) and data["errors"]
        assert all(isinstance(m, str) and not m.startswith("#<") for m in data["errors"])
        assert "Traceback" not in response.content.decode()
        assert "Internal error" not in response.content.decode(), response.content


@FUZZ_SETTINGS
@given(
    params=st.dictionaries(
        st.sampled_from(
            [
                "filters",
                "order",
                "select",
                "where",
                "limit",
                "offset",
                "count",
                "distinct",
                "reader_tokens",
            ]
        ),
        param_value,
        max_size=5,
    )
)
def test_list_parameters_never_5xx(client, active, params):
    _, token = active
    for resource in ("links", "collections", "users", "repositories", "groups"):
        check(client.get(f"/arvados/v1/{resource}", params, HTTP_AUTHORIZATION=f"Bearer {token}"))


@FUZZ_SETTINGS
@given(filters=filter_triples)
def test_structured_filters_never_5xx(client, active, filters):
    _, token = active
    check(
        client.get(
            "/arvados/v1/links",
            {"filters": json.dumps(filters)},
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
    )


@FUZZ_SETTINGS
@given(
    body=json_values
    | st.dictionaries(
        st.sampled_from(["link", "collection", "group", "repository", "user"]),
        json_values
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "link_class",
                    "properties",
                    "owner_uuid",
                    "uuid",
                    "head_uuid",
                    "manifest_text",
                    "tail_uuid",
                    "group_class",
                    "username",
                    "bogus",
                ]
            ),
            json_values,
            max_size=4,
        ),
        max_size=2,
    )
)
def test_bodies_never_5xx(client, active, body):
    _, token = active
    for resource in ("links", "collections", "groups", "repositories"):
        check(
            client.post(
                f"/arvados/v1/{resource}",
                data=json.dumps(body),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {token}",
            )
        )


@FUZZ_SETTINGS
@given(raw=st.binary(max_size=64))
def test_raw_bodies_never_5xx(client, active, raw):
    _, token = active
    for content_type in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
        check(
            client.post(
                "/arvados/v1/links",
                data=raw,
                content_type=content_type,
                HTTP_AUTHORIZATION=f"Bearer {token}",
            )
        )


# Operands that PostgreSQL rejects or that overflow its types: found by hand, kept as cases.
HOSTILE = [
    {"filters": json.dumps([["name", "=", "a\x00b"]])},
    {"filters": json.dumps([["name", "in", ["a\x00b"]]])},
    {"filters": json.dumps([["name", "like", "a\x00%"]])},
    {"filters": json.dumps([["id", "=", 2**70]])},
    {"filters": json.dumps([["id", "=", "99999999999999999"]])},
    {"filters": json.dumps([["id", "=", 1e300]])},
    {"filters": json.dumps([["created_at", "=", "9999-12-31T23:59:59Z"]])},
    {"filters": json.dumps([["created_at", "=", "0001-01-01"]])},
    {"filters": json.dumps([["created_at", "=", "2020-02-30"]])},
    {"filters": json.dumps([["properties", "=", "x\x00"]])},
    {"offset": "999999999999999999"},
    {"where": json.dumps({"name": "a\x00"})},
    {"where": json.dumps({"id": 2**70})},
    {"order": "\x00"},
]


@pytest.mark.parametrize("params", HOSTILE)
def test_database_hostile_operands_are_plain_422s(client, active, params):
    _, token = active
    r = client.get("/arvados/v1/links", params, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code < 500
    assert b"Internal error" not in r.content


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.dictionaries(
        st.sampled_from(["buffer_size", "since", "follow", "api_token", "reader_tokens"]),
        st.text(max_size=12) | st.sampled_from(["-1", "0", "99999999999999999999", "1e3", " 7"]),
        max_size=3,
    ),
    accept=st.text(max_size=40) | st.sampled_from(["text/plain;q=x", "*/*;q=0", ",,;"]),
    last_event=st.none() | st.text(max_size=12),
)
def test_log_tail_follow_parameters_never_5xx(client, active, params, accept, last_event):
    from tests.rows import add_chunks, make_job

    user, token = active
    job = make_job(user, state="Failed")
    add_chunks(job, ["a line\n"])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_ACCEPT": accept}
    if last_event is not None:
        headers["HTTP_LAST_EVENT_ID"] = last_event
    try:
        response = client.get(f"/arvados/v1/jobs/{job.uuid}/log_tail_follow", params, **headers)
    except ValueError:
        return  # the test client refuses some header values before any request is made
    assert response.status_code < 500
    if response.status_code >= 400:
        assert set(response.json()) == {"errors", "error_token"}
    elif response.streaming:  # a finished job: its log and end, whatever the parameters
        text = b"".join(response.streaming_content).decode()
        assert f"job {job.uuid} Failed finished_at" in text
    else:
        assert response.json()["href"].endswith(job.uuid)


job_attribute_values = (
    json_values
    | st.lists(st.text(max_size=8), max_size=4)  # argv-like
    | st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)  # string maps
    | st.sampled_from(["d41d8cd98f00b204e9800998ecf8427e+0", "0" * 32 + "+1", "-rf", "--help"])
)


@FUZZ_SETTINGS
@given(
    job=st.dictionaries(
        st.sampled_from(
            [
                "command",
                "working_dir",
                "environment",
                "labels",
                "meta",
                "script",
                "repository",
                "script_version",
                "script_parameters",
                "runtime_constraints",
                "nondeterministic",
                "door",
            ]
        ),
        job_attribute_values,
        max_size=6,
    ),
    find_or_create=st.sampled_from([None, "true", "false", "maybe"]),
)
def test_job_bodies_never_5xx_and_bad_ones_create_nothing(client, active, job, find_or_create):
    from jobs.models import Job

    _, token = active
    before = Job.objects.count()
    params = f"?find_or_create={find_or_create}" if find_or_create else ""
    response = client.post(
        f"/arvados/v1/jobs{params}",
        data=json.dumps({"job": job}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    check(response)
    if response.status_code >= 400:
        assert Job.objects.count() == before
