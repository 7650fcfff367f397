"""Lineage (`provenance`, `used_by`), invalidation and the reuse summary, over a chain built
through the API: R → A → OA → B → OB → C → OC, with B reused once and C also reading X, the
output of a job only the admin can read."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.utils import timezone

from jobs.models import Job, JobReuse, ReuseTally
from tests.api.test_conventions import assert_error
from tests.reuse_world import Templates, World, build_templates

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return build_templates(tmp_path_factory.mktemp("provenance-templates"))


@pytest.fixture
def w(api: Any, templates: Templates, admin: Any, active: Any, spectator: Any) -> World:
    return World(api, templates, admin, active, spectator)


def submit(w: World, name: str, inputs: dict[str, str], token: str, **params: Any) -> Any:
    job = {"command": ["python3", f"{name}.py"], "script_parameters": inputs}
    status, body = w.api.post(
        "jobs", params={"find_or_create": True} | params, body={"job": job}, token=token
    )
    assert status == 200, body
    return body


def finish(w: World, job: dict[str, Any], output: str, *, hours: float = 1.0, cpus: int = 1) -> str:
    """Record `job` as Complete after `hours` on `cpus` cores, with `output` and a log."""
    pdh = w.collection(output)
    end = timezone.now()
    Job.objects.filter(uuid=job["uuid"]).update(
        state="Complete",
        success=True,
        running=False,
        output=pdh,
        log=w.collection(f"log of {output}", name="log.txt"),
        started_at=end - dt.timedelta(hours=hours),
        finished_at=end,
        runtime_constraints={"vcpus": cpus},
    )
    return pdh


@pytest.fixture
def chain(w: World) -> dict[str, Any]:
    c: dict[str, Any] = {"R": w.collection("raw data", name="raw.csv")}
    c["A"] = submit(w, "clean", {"raw": c["R"]}, w.active)
    c["OA"] = finish(w, c["A"], "clean data")
    c["B"] = submit(w, "train", {"data": c["OA"]}, w.active)
    c["OB"] = finish(w, c["B"], "model", hours=2, cpus=4)
    again = submit(w, "train", {"data": c["OA"]}, w.active)  # the reuse in the middle
    assert again["uuid"] == c["B"]["uuid"]
    c["Z"] = submit(w, "secret", {}, w.admin)  # a branch only the admin can read
    c["X"] = finish(w, c["Z"], "secret weights")
    c["C"] = submit(w, "report", {"model": c["OB"], "weights": c["X"]}, w.active)
    c["OC"] = finish(w, c["C"], "report")
    c["logs"] = {k: Job.objects.get(uuid=c[k]["uuid"]).log for k in ("A", "B", "C", "Z")}
    c["reuse"] = f"reuse:{JobReuse.objects.get(job_uuid=c['B']['uuid']).pk}"
    return c


def edges(graph: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(e["from"], e["to"], e["kind"]) for e in graph["edges"]}


def nodes(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in graph["nodes"]}


def test_upstream_lineage_of_a_result_as_its_owner(w, chain):
    c, u = chain, lambda k: chain[k]["uuid"]
    graph = w.api.ok("GET", f"collections/{c['OC']}/provenance", token=w.active)
    assert graph["direction"] == "upstream" and graph["depth"] == 5
    assert edges(graph) == {
        (u("C"), c["OC"], "output"),
        (u("C"), c["logs"]["C"], "log"),
        (c["OB"], u("C"), "input"),
        (c["X"], u("C"), "input"),
        ("hidden:1", c["X"], "output"),
        (u("B"), c["OB"], "output"),
        (u("B"), c["logs"]["B"], "log"),
        (u("B"), c["reuse"], "reused_by"),
        (c["OA"], u("B"), "input"),
        (u("A"), c["OA"], "output"),
        (u("A"), c["logs"]["A"], "log"),
        (c["R"], u("A"), "input"),
    }
    shown = nodes(graph)
    assert set(shown) == {
        c["OC"],
        c["OB"],
        c["OA"],
        c["R"],
        c["X"],
        u("A"),
        u("B"),
        u("C"),
        "hidden:1",
        c["reuse"],
        c["logs"]["A"],
        c["logs"]["B"],
        c["logs"]["C"],
    }
    # The admin's job is a placeholder: not even its uuid.
    assert shown["hidden:1"] == {"id": "hidden:1", "kind": "job", "readable": False}
    assert u("Z") not in str(graph)
    assert shown[u("B")]["door"] == "arvados" and shown[u("B")]["command"] == [
        "python3",
        "train.py",
    ]
    assert shown[c["reuse"]]["user_uuid"] == w.active_user.uuid
    assert shown[c["reuse"]]["saved_core_seconds"] == pytest.approx(2 * 3600 * 4)
    assert shown[c["X"]]["readable"] is True  # the admin shared the collection itself


def test_another_user_sees_only_what_they_may_read(w, chain):
    c, u = chain, lambda k: chain[k]["uuid"]
    w.share(u("C"), w.spectator_user)
    graph = w.api.ok("GET", f"jobs/{u('C')}/provenance", token=w.spectator)
    assert edges(graph) == {
        (u("C"), c["OC"], "output"),
        (u("C"), c["logs"]["C"], "log"),
        (c["OB"], u("C"), "input"),
        (c["X"], u("C"), "input"),
        ("hidden:1", c["OB"], "output"),
        ("hidden:2", c["X"], "output"),
    }
    assert u("A") not in str(graph) and u("B") not in str(graph)
    # A job it cannot read at all is a 404, as everywhere.
    status, body = w.api.get(f"jobs/{u('A')}/provenance", token=w.spectator)
    assert status == 404, body


def test_downstream_from_an_input_and_depth(w, chain):
    c, u = chain, lambda k: chain[k]["uuid"]
    graph = w.api.ok("GET", f"collections/{c['R']}/used_by", token=w.active)
    assert graph["direction"] == "downstream"
    assert {(s, t, k) for s, t, k in edges(graph) if k in ("input", "output")} == {
        (c["R"], u("A"), "input"),
        (u("A"), c["OA"], "output"),
        (c["OA"], u("B"), "input"),
        (u("B"), c["OB"], "output"),
        (c["OB"], u("C"), "input"),
        (u("C"), c["OC"], "output"),
    }
    one = w.api.ok("GET", f"collections/{c['R']}/used_by", params={"depth": 1}, token=w.active)
    assert {n["id"] for n in one["nodes"] if n["kind"] == "job"} == {u("A")}
    shallow = w.api.ok(
        "GET", f"collections/{c['OC']}/provenance", params={"depth": 1}, token=w.active
    )
    assert {n["id"] for n in shallow["nodes"] if n["kind"] == "job"} == {u("C")}
    for bad in ("-1", "deep"):
        status, body = w.api.get(
            f"collections/{c['R']}/used_by", params={"depth": bad}, token=w.active
        )
        assert status == 422 and "depth" in body["errors"][0], body


def test_invalidation_stops_reuse_and_shows_in_explain_and_used_by(w, chain):
    c, u = chain, lambda k: chain[k]["uuid"]
    status, body = w.api.post(f"jobs/{u('A')}/invalidate", params={"reason": "bad"}, token=w.active)
    assert status == 403, body
    status, body = w.api.post(f"jobs/{u('A')}/invalidate", token=w.admin)
    assert_error(status, body, 422, "reason must be a non-empty string: why the output is bad")
    done = w.api.ok(
        "POST", f"jobs/{u('A')}/invalidate", params={"reason": "corrupt raw file"}, token=w.admin
    )
    assert done["invalidated_reason"] == "corrupt raw file" and done["invalidated_at"]
    built_on = {n["id"] for n in done["used_by"]["nodes"] if n["kind"] == "job"}
    assert built_on == {u("A"), u("B"), u("C")}
    again = submit(w, "clean", {"raw": c["R"]}, w.active, explain=True)
    assert again["uuid"] != u("A")
    reasons = {x["uuid"]: x["reason"] for x in again["reuse_explanation"]["candidates"]}
    assert "marked bad" in reasons[u("A")] and "corrupt raw file" in reasons[u("A")]


def test_the_reuse_summary_adds_up_the_rows(w, chain):
    summary = w.api.ok("GET", "jobs/reuse_summary", params={"by": "door"}, token=w.admin)
    hits = JobReuse.objects.count()
    saved = sum(r.saved_core_seconds for r in JobReuse.objects.all())
    misses = sum(t.count for t in ReuseTally.objects.filter(hit=False))
    assert (summary["hits"], summary["misses"]) == (hits, misses) == (1, 4)
    assert summary["core_hours_saved"] == pytest.approx(saved / 3600) == pytest.approx(8.0)
    assert summary["top_miss_reason"] == {
        "reason": "no earlier job with the same inputs",
        "count": 4,
    }
    assert [g["key"] for g in summary["groups"]] == ["arvados"]
    mine = w.api.ok("GET", "jobs/reuse_summary", params={"since": "7d"}, token=w.spectator)
    assert (mine["hits"], mine["misses"]) == (0, 0)  # only the caller's own submissions
    status, body = w.api.get("jobs/reuse_summary", params={"by": "colour"}, token=w.admin)
    assert_error(
        status, body, 422, "by must be one of user, project, door, day, week, month, not 'colour'"
    )


# --- the admin: drawn lineage and the reuse panel ---------------------------------------


def test_the_admin_job_and_collection_pages_draw_the_lineage(w, chain, client):
    from django.urls import reverse

    from jobs.models import Collection

    c, u = chain, lambda k: chain[k]["uuid"]
    client.force_login(w.admin_user)
    job = Job.objects.get(uuid=u("B"))
    page = client.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()
    assert (
        page.count('<svg xmlns="http://www.w3.org/2000/svg" class="crunch-lineage"') == 2
        and 'id="lineage-upstream"' in page
    )
    drawn = set(re.findall(r'data-id="([^"]+)"', page))
    assert {u("A"), u("B"), u("C"), c["OA"], c["OB"], c["R"]} <= drawn
    first = Job.objects.get(uuid=u("A"))
    assert f'href="{reverse("admin:jobs_job_change", args=[first.pk])}"' in page
    collection = Collection.objects.filter(portable_data_hash=c["OC"]).first()
    page = client.get(
        reverse("admin:jobs_collection_change", args=[collection.pk])
    ).content.decode()
    assert 'id="crunch-lineage"' in page and f'data-id="{u("C")}"' in page
    # Text from users is escaped inside the drawing.
    Job.objects.filter(uuid=u("C")).update(command=["<script>alert(1)</script>"])
    page = client.get(
        reverse("admin:jobs_collection_change", args=[collection.pk])
    ).content.decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def test_the_admin_home_shows_what_reuse_saved(w, chain, client):
    from django.urls import reverse

    client.force_login(w.admin_user)
    page = client.get(reverse("admin:index")).content.decode()
    assert 'id="crunch-reuse-module"' in page
    row = re.search(r'<tr class="reuse-door"><td>arvados</td><td>(\d+)</td><td>(\d+)</td>', page)
    assert row and (int(row.group(1)), int(row.group(2))) == (1, 4)
    assert "8.00" in page  # core-hours saved by the reuse of B (2 h on 4 cores)


def test_metrics_are_public_only_when_configured(client, settings, active):
    _, token = active
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 403
    settings.CRUNCH_METRICS_PUBLIC = True
    answer = client.get("/metrics")
    assert answer.status_code == 200 and b"# TYPE crunch_jobs gauge" in answer.content
