"""The Bacalhau-style door in-process: the spec's checks in upstream's words, server fields
ignored with warnings, re-submission by name, namespaces as projects, label selectors,
paging, and, whatever a body or query holds, a 2xx or a 4xx in echo's shape (never a 5xx)
with nothing created on a refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.models import Collection, Job, JobTemplate
from tests.reuse_world import Templates, World, build_templates

pytestmark = pytest.mark.django_db

BASE = "/api/v1/orchestrator"
IMAGE = "crunch-test/busybox:1"


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return build_templates(tmp_path_factory.mktemp("bacalhau-templates"))


@pytest.fixture
def w(api: Any, templates: Templates, admin: Any, active: Any, spectator: Any) -> World:
    world = World(api, templates, admin, active, spectator)
    world.image("busybox", repo_tag=IMAGE)
    return world


def spec(**job: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Type": "batch",
        "Count": 1,
        "Tasks": [
            {
                "Name": "main",
                "Engine": {
                    "Type": "docker",
                    "Params": {
                        "Image": IMAGE,
                        "Entrypoint": ["sh", "-c"],
                        "Parameters": ["echo hi"],
                    },
                },
            }
        ],
    }
    body.update(job)
    return {"Job": body}


def call(client: Any, method: str, path: str, token: str, body: Any = None, **query: str) -> Any:
    kwargs: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if body is not None:
        kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body)
        kwargs["content_type"] = "application/json"
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    response = getattr(client, method.lower())(path, **kwargs)
    return response.status_code, response.json()


def put(client: Any, token: str, body: Any) -> tuple[int, Any]:
    return call(client, "PUT", f"{BASE}/jobs", token, body)


def test_a_batch_job_is_a_template_with_count_instances(client: Any, w: World) -> None:
    status, body = put(client, w.active, spec(Count=2, Labels={"env": "prod"}))
    assert status == 200, body
    assert body["JobID"].startswith("j-") and body["Warnings"] == []
    template = JobTemplate.objects.get(external_id=body["JobID"])
    instances = Job.objects.filter(template_uuid=template.uuid).order_by("template_slot")
    assert [(j.template_slot, j.door, j.state) for j in instances] == [
        ("r0", "bacalhau", "Queued"),
        ("r1", "bacalhau", "Queued"),
    ]
    assert instances[0].command == ["sh", "-c", "echo hi"]
    assert instances[0].run_environment["BACALHAU_JOB_ID"] == body["JobID"]
    status, got = call(client, "GET", f"{BASE}/jobs/{body['JobID'][:10]}", w.active)
    assert status == 200, got
    job = got["Job"]
    assert (job["ID"], job["Name"], job["Namespace"]) == (body["JobID"], body["JobID"], "default")
    assert (job["Type"], job["Count"], job["Version"]) == ("batch", 2, 0)
    assert job["State"] == {"StateType": "Queued", "Message": ""}
    assert isinstance(job["CreateTime"], int) and job["CreateTime"] > 10**18
    # submitted, two executions created, queued: four changes
    assert job["Revision"] == 4
    status, executions = call(client, "GET", f"{BASE}/jobs/{body['JobID']}/executions", w.active)
    assert [e["ComputeState"]["StateType"] for e in executions["Items"]] == ["New", "New"]


def test_server_fields_are_ignored_with_warnings_and_untagged_images_warned(
    client: Any, w: World
) -> None:
    body = spec(ID="j-mine", State={"StateType": "Completed"}, Version=7)
    body["Job"]["Meta"] = {"bacalhau.org/x": "1", "keep": "yes"}
    body["Job"]["Tasks"][0]["Engine"]["Params"]["Image"] = "crunch-test/busybox"
    w.tag(w.image("busybox2"), "crunch-test/busybox:latest")
    status, answer = put(client, w.active, body)
    assert status == 200, answer
    assert answer["JobID"] != "j-mine"
    warnings = "\n".join(answer["Warnings"])
    assert "job ID is ignored when submitting a batch job" in warnings
    assert "job state is ignored" in warnings and "job version is ignored" in warnings
    assert "meta key bacalhau.org/x is reserved" in warnings
    assert "has no tag or digest: crunch-test/busybox:latest is used" in warnings
    template = JobTemplate.objects.get(external_id=answer["JobID"])
    assert template.definition["Meta"] == {"keep": "yes"}


def test_resubmitting_by_name_keeps_the_id_and_bumps_the_version(client: Any, w: World) -> None:
    _, first = put(client, w.active, spec(Name="nightly"))
    _, same = put(client, w.active, spec(Name="nightly"))
    assert same["JobID"] == first["JobID"]
    _, job = call(client, "GET", f"{BASE}/jobs/{first['JobID']}", w.active)
    assert job["Job"]["Version"] == 0
    changed = spec(Name="nightly")
    changed["Job"]["Tasks"][0]["Engine"]["Params"]["Parameters"] = ["echo changed"]
    _, again = put(client, w.active, changed)
    assert again["JobID"] == first["JobID"]
    _, job = call(client, "GET", f"{BASE}/jobs/nightly", w.active)
    assert job["Job"]["Version"] == 1
    template = JobTemplate.objects.get(external_id=first["JobID"])
    jobs = list(Job.objects.filter(template_uuid=template.uuid).order_by("id"))
    # the old version's instance is cancelled, the new one queued
    assert [(j.template_version, j.state) for j in jobs] == [(0, "Cancelled"), (1, "Queued")]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"Type": None}, "missing job type"),
        ({"Type": "cron"}, 'invalid job type: "cron"'),
        ({"Count": -1}, "job count must be >= 0"),
        ({"Count": None}, "job count must be > 0 for batch jobs"),
        ({"Tasks": []}, "missing job tasks"),
        ({"Constraints": [{"Key": "", "Operator": "="}]}, "selector key cannot be blank"),
        (
            {"Constraints": [{"Key": "a", "Operator": "in", "Values": []}]},
            "constraint 0 validation failed",
        ),
        ({"Tasks": [{"Engine": {"Type": "docker"}}]}, "missing task name"),
        ({"Tasks": [{"Name": "t", "Engine": {}}]}, "engine validation failed: missing spec type"),
        (
            {
                "Tasks": [
                    {
                        "Name": "t",
                        "Engine": {
                            "Type": "docker",
                            "Params": {"Image": IMAGE, "Entrypoint": ["x"]},
                        },
                        "ResultPaths": [{"Name": "out", "Path": "/outputs"}],
                    }
                ]
            },
            "publisher must be set if result paths are set",
        ),
        (
            {
                "Tasks": [
                    {
                        "Name": "t",
                        "Engine": {
                            "Type": "docker",
                            "Params": {"Image": IMAGE, "Entrypoint": ["x"]},
                        },
                        "InputSources": [
                            {
                                "Source": {"Type": "urlDownload", "Params": {"URL": "http://a/b"}},
                                "Alias": "a",
                                "Target": "/a",
                            },
                            {
                                "Source": {"Type": "urlDownload", "Params": {"URL": "http://a/c"}},
                                "Alias": "a",
                                "Target": "/b",
                            },
                        ],
                    }
                ]
            },
            "input source with alias a already exist",
        ),
        (
            {
                "Tasks": [
                    {
                        "Name": "t",
                        "Engine": {
                            "Type": "docker",
                            "Params": {"Image": "nosuch/image:1", "Entrypoint": ["x"]},
                        },
                    }
                ]
            },
            "Docker image locator not found for nosuch/image:1",
        ),
    ],
)
def test_refusals_use_upstreams_words_and_create_nothing(
    client: Any, w: World, change: dict[str, Any], words: str
) -> None:
    body = spec(**change)
    body["Job"] = {k: v for k, v in body["Job"].items() if v is not None}
    before = (JobTemplate.objects.count(), Job.objects.count())
    status, answer = put(client, w.active, body)
    assert status == 400, answer
    assert words in answer["message"], answer
    assert answer["error"].startswith("code=400, message=")
    assert (JobTemplate.objects.count(), Job.objects.count()) == before


def test_unknown_jobs_are_404_and_no_token_is_401(client: Any, w: World) -> None:
    status, body = call(client, "GET", f"{BASE}/jobs/j-00000000-0000", w.active)
    assert status == 404 and body["message"] == "job not found: j-00000000-0000"
    response = client.get(f"{BASE}/jobs")
    assert response.status_code == 401 and "message" in response.json()
    status, body = call(client, "DELETE", f"{BASE}/jobs/j-nope", w.active, {}, reason="None")
    assert status == 404


def test_another_users_job_is_invisible(client: Any, w: World) -> None:
    _, answer = put(client, w.active, spec())
    status, _ = call(client, "GET", f"{BASE}/jobs/{answer['JobID']}", w.spectator)
    assert status == 404
    _, listed = call(client, "GET", f"{BASE}/jobs", w.spectator)
    assert answer["JobID"] not in [j["ID"] for j in listed["Items"]]


def test_namespaces_are_projects_and_need_write_permission(client: Any, w: World) -> None:
    # the shared project is readable by the active user, not writable
    status, answer = put(client, w.active, spec(Namespace=w.shared))
    assert status == 403, answer
    assert "permission denied" in answer["message"]
    assert not JobTemplate.objects.filter(owner_uuid=w.shared).exists()
    status, answer = put(client, w.admin, spec(Namespace="shared"))
    assert status == 200, answer
    _, job = call(client, "GET", f"{BASE}/jobs/{answer['JobID']}", w.active)
    assert job["Job"]["Namespace"] == "shared"
    status, listed = call(client, "GET", f"{BASE}/jobs", w.active, namespace="shared")
    assert [j["ID"] for j in listed["Items"]] == [answer["JobID"]]
    status, answer = put(client, w.active, spec(Namespace="no-such-project"))
    assert status == 404


def test_list_by_label_selector_order_and_paging(client: Any, w: World) -> None:
    made = {}
    for name, labels in [
        ("a", {"env": "prod", "tier": "a"}),
        ("b", {"env": "prod", "tier": "b", "deprecated": "yes"}),
        ("c", {"env": "dev", "tier": "a"}),
        ("d", {"env": "prod", "tier": "c"}),
    ]:
        made[name] = put(client, w.active, spec(Name=name, Labels=labels))[1]["JobID"]

    def names(**query: str) -> list[str]:
        status, body = call(client, "GET", f"{BASE}/jobs", w.active, **query)
        assert status == 200, body
        return [j["Name"] for j in body["Items"]]

    assert names(labels="env%3Dprod") == ["a", "b", "d"]
    assert names(labels="env%3Dprod,tier%20in%20(a,b),!deprecated") == ["a"]
    assert names(labels="tier%20notin%20(a)") == ["b", "d"]
    assert names(order_by="created_at", reverse="True") == ["d", "c", "b", "a"]
    status, page = call(client, "GET", f"{BASE}/jobs", w.active, limit="3")
    assert [j["Name"] for j in page["Items"]] == ["a", "b", "c"] and page["NextToken"]
    status, rest = call(client, "GET", f"{BASE}/jobs", w.active, next_token=page["NextToken"])
    assert [j["Name"] for j in rest["Items"]] == ["d"] and rest["NextToken"] == ""
    status, body = call(client, "GET", f"{BASE}/jobs", w.active, labels="tier%20in%20(a")
    assert status == 400 and "labels selector" in body["message"]
    status, body = call(client, "GET", f"{BASE}/jobs", w.active, order_by="name")
    assert status == 400 and body["message"] == "OrderBy name not supported for listJobs"
    status, body = call(client, "GET", f"{BASE}/jobs", w.active, next_token="garbage")
    assert status == 400 and body["message"] == "invalid paging token"


def test_stop_cancels_the_instances_and_reads_stopped(client: Any, w: World) -> None:
    _, answer = put(client, w.active, spec(Type="service", Count=2))
    status, stopped = call(
        client, "DELETE", f"{BASE}/jobs/{answer['JobID']}", w.active, {}, reason="None"
    )
    assert status == 200 and stopped["EvaluationID"]
    _, job = call(client, "GET", f"{BASE}/jobs/{answer['JobID']}", w.active, include="history")
    assert job["Job"]["State"]["StateType"] == "Stopped"
    template = JobTemplate.objects.get(external_id=answer["JobID"])
    assert set(Job.objects.filter(template_uuid=template.uuid).values_list("state", flat=True)) == {
        "Cancelled"
    }
    levels = {h["Type"] for h in job["History"]["Items"]}
    assert levels == {"JobLevel", "ExecutionLevel"}
    _, history = call(
        client, "GET", f"{BASE}/jobs/{answer['JobID']}/history", w.active, event_type="job"
    )
    assert [h["JobState"]["New"] for h in history["Items"]][-1] == "Stopped"
    revisions = [h["NewRevision"] for h in job["History"]["Items"]]
    assert revisions == sorted(revisions) and revisions[-1] == job["Job"]["Revision"]


def test_reuse_is_opt_in_and_returns_the_earlier_completed_job(client: Any, w: World) -> None:
    body = spec(Meta={"crunch.reuse": "true"})
    _, first = put(client, w.active, body)
    template = JobTemplate.objects.get(external_id=first["JobID"])
    Job.objects.filter(template_uuid=template.uuid).update(
        state="Complete", output=w.collection("x")
    )
    _, second = put(client, w.active, body)
    assert second["JobID"] == first["JobID"]
    assert "its results are returned" in second["Warnings"][0]
    _, third = put(client, w.active, spec())  # no opt-in: runs again
    assert third["JobID"] != first["JobID"]


def test_a_job_no_live_node_can_run_is_refused_in_bacalhaus_words(client: Any, w: World) -> None:
    from jobs.services.runs import node_register

    node_register(
        hostname="gpu-less", cpus=2, ram_bytes=2**32, gpus=0, labels={"region": "eu"}, slots=1
    )
    body = spec(Count=3, Constraints=[{"Key": "region", "Operator": "=", "Values": ["us"]}])
    before = JobTemplate.objects.count()
    status, answer = put(client, w.active, body)
    assert status == 400
    assert answer["message"] == (
        "not enough nodes to run job. requested: 3, available: 1, suitable: 0. "
        "gpu-less: region=eu does not satisfy region = us"
    )
    assert JobTemplate.objects.count() == before
    _, nodes = call(client, "GET", f"{BASE}/nodes", w.active)
    assert (
        nodes["Nodes"] == nodes["nodes"] and nodes["nodes"][0]["Info"]["Labels"]["region"] == "eu"
    )


def test_inputs_from_collections_are_placed_in_the_working_tree(client: Any, w: World) -> None:
    data = w.collection("1,2,3\n", name="data.csv")
    body = spec()
    body["Job"]["Tasks"][0] |= {
        "InputSources": [
            {"Source": {"Type": "crunch", "Params": {"PDH": data}}, "Target": "/inputs"}
        ],
        "Publisher": {"Type": "local"},
        "ResultPaths": [{"Name": "outputs", "Path": "/outputs"}],
    }
    status, answer = put(client, w.active, body)
    assert status == 200, answer
    job = Job.objects.get(template_uuid=JobTemplate.objects.get(external_id=answer["JobID"]).uuid)
    assert job.script_parameters == {"inputs": {"/inputs": data}}
    tree = Collection.objects.filter(portable_data_hash=job.working_dir).first()
    assert (
        tree is not None
        and "./inputs/inputs" in tree.manifest_text
        and "data.csv" in tree.manifest_text
    )
    from jobs.provenance import lineage

    graph = lineage(user=w.active_user, ident=job.uuid, depth=1)
    assert {"from": data, "to": job.uuid, "kind": "input"} in graph["edges"]
    assert {"from": job.working_dir, "to": job.uuid, "kind": "ran"} in graph["edges"]
    assert [n["door"] for n in graph["nodes"] if n["id"] == job.uuid] == ["bacalhau"]
    assert job.runtime_constraints["mounts"] == [
        {"source": "src", "subpath": "inputs/inputs", "path": "/inputs"},
        {"source": "output", "subpath": "outputs", "path": "/outputs"},
    ]


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["\x00", "batch", "ops", "docker", IMAGE, "=", "in", "/outputs", "../x"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
task = st.fixed_dictionaries(
    {},
    optional={
        "Name": values,
        "Engine": st.fixed_dictionaries(
            {},
            optional={
                "Type": st.just("docker") | values,
                "Params": st.fixed_dictionaries(
                    {},
                    optional={
                        "Image": st.just(IMAGE) | values,
                        "Entrypoint": values,
                        "Parameters": values,
                        "EnvironmentVariables": values,
                        "WorkingDirectory": values,
                    },
                ),
            },
        )
        | values,
        "Env": values,
        "InputSources": values,
        "ResultPaths": values,
        "Publisher": values,
        "Resources": st.fixed_dictionaries(
            {}, optional={"CPU": values, "Memory": values, "GPU": values, "Disk": values}
        )
        | values,
        "Timeouts": values,
    },
)
fuzzed_jobs = st.fixed_dictionaries(
    {},
    optional={
        "Type": st.sampled_from(["batch", "ops", "daemon", "service"]) | values,
        "Name": values,
        "Count": st.integers(min_value=-3, max_value=200) | values,
        "Priority": values,
        "Namespace": values,
        "Meta": values,
        "Labels": values,
        "Constraints": st.lists(
            st.fixed_dictionaries(
                {}, optional={"Key": values, "Operator": values, "Values": values}
            )
        )
        | values,
        "Tasks": st.lists(task, max_size=2) | values,
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(job=fuzzed_jobs | values)
def test_any_body_is_a_4xx_or_a_job(client: Any, w: World, job: Any) -> None:
    before = (JobTemplate.objects.count(), Job.objects.count(), Collection.objects.count())
    body = {"Job": job} if isinstance(job, dict) else job
    status, answer = put(client, w.active, body)
    assert status in (200, 400, 403, 404), (status, answer)
    if status != 200:
        assert set(answer) == {"message", "error"}
        assert (
            JobTemplate.objects.count(),
            Job.objects.count(),
            Collection.objects.count(),
        ) == before
    else:
        assert JobTemplate.objects.filter(external_id=answer["JobID"]).exists()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(["jobs", "jobs/x", "jobs/j-1/history", "jobs/j-1/executions", "nodes"]),
    query=st.dictionaries(
        st.sampled_from(
            [
                "limit",
                "next_token",
                "order_by",
                "reverse",
                "labels",
                "namespace",
                "include",
                "event_type",
            ]
        ),
        st.text(max_size=8),
        max_size=3,
    ),
)
def test_any_query_is_a_2xx_or_a_4xx(
    client: Any, w: World, path: str, query: dict[str, str]
) -> None:
    response = client.get(f"{BASE}/{path}", query, HTTP_AUTHORIZATION=f"Bearer {w.active}")
    assert response.status_code < 500, response.content
    assert response.status_code in (200, 400, 404), response.content


def test_resources_and_timeouts_in_bacalhaus_units(client: Any, w: World) -> None:
    body = spec()
    body["Job"]["Tasks"][0] |= {
        "Resources": {"CPU": "500m", "Memory": "256mb", "GPU": "0"},
        "Timeouts": {"ExecutionTimeout": 600},
    }
    status, answer = put(client, w.active, body)
    assert status == 200, answer
    template = JobTemplate.objects.get(external_id=answer["JobID"])
    job = Job.objects.get(template_uuid=template.uuid)
    assert (job.runtime_constraints["vcpus"], job.runtime_constraints["ram"]) == (0.5, 256_000_000)
    assert job.runtime_constraints["max_run_time"] == 600
    _, got = call(client, "GET", f"{BASE}/jobs/{answer['JobID']}", w.active)
    task = got["Job"]["Tasks"][0]
    assert task["Resources"] == {"CPU": "500m", "Memory": "256mb", "GPU": "0"}
    assert task["Timeouts"] == {"ExecutionTimeout": 600, "QueueTimeout": 0, "TotalTimeout": 1800}
    body["Job"]["Tasks"][0]["Resources"] = {"Memory": "lots"}
    status, answer = put(client, w.active, body)
    assert (
        status == 400 and "Resources.Memory: 'lots' is not an amount of memory" in answer["message"]
    )
    # a service runs until stopped: no default time limit
    status, answer = put(client, w.active, spec(Type="service", Count=1))
    template = JobTemplate.objects.get(external_id=answer["JobID"])
    assert "max_run_time" not in Job.objects.get(template_uuid=template.uuid).runtime_constraints


def test_url_inputs_on_the_servers_own_networks_are_refused(
    client: Any, w: World, settings: Any, tmp_path: Any
) -> None:
    import http.server
    import threading

    (tmp_path / "data.txt").write_text("secret")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args, directory=str(tmp_path))

        def do_GET(self) -> None:
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/data.txt")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def with_input(url: str) -> dict[str, Any]:
        body = spec()
        body["Job"]["Tasks"][0]["InputSources"] = [
            {"Source": {"Type": "urlDownload", "Params": {"URL": url}}, "Target": "/inputs"}
        ]
        return body

    try:
        before = (Collection.objects.count(), JobTemplate.objects.count())
        status, answer = put(client, w.active, with_input(f"{base}/data.txt"))
        assert status == 400
        assert "is on a private network (127.0.0.1)" in answer["message"]
        assert (Collection.objects.count(), JobTemplate.objects.count()) == before
        settings.CRUNCH_URL_INPUTS_PRIVATE = True
        status, answer = put(client, w.active, with_input(f"{base}/moved"))
        assert status == 400 and "download failed: HTTP Error 302" in answer["message"]
        status, answer = put(client, w.active, with_input(f"{base}/data.txt"))
        assert status == 200, answer
    finally:
        server.shutdown()
