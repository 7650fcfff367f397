"""The jobs admin in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium against a live server, logged in through the admin's
login form as a staff user.

Without Chromium the tests are skipped, saying why; with CRUNCH_REQUIRE_SERVICES=1 (CI) they
fail instead. Screenshots go to the test's temporary directory, or to CRUNCH_SCREENSHOT_DIR
when set: `CRUNCH_SCREENSHOT_DIR=docs .venv/bin/pytest tests/api/test_admin_browser.py`
refreshes docs/admin-queue.png, docs/admin-job.png and docs/admin-lineage.png.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Execution, Job, JobReuse, LogChunk, User
from jobs.services.executions import execution_start
from jobs.services.jobs import parameters_digest
from tests.api.admin_helpers import (
    PASSWORD,
    hosted_foo,
    log_lines,
    make_node,
)
from tests.git_helpers import join_server_threads
from tests.rows import make_collection, make_job

REQUIRE_SERVICES = os.environ.get("CRUNCH_REQUIRE_SERVICES") == "1"
CHROMIUM = os.environ.get("CRUNCH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CRUNCH_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 15  # seconds a page may take to show what a test waits for


def _missing() -> str | None:
    for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (os.access(path, os.X_OK) or shutil.which(path)):
            return f"{name} is not installed at {path} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    """A browser per test: quitting it closes its kept-alive connections, so the live
    server's request threads end with the test."""
    reason = _missing()
    if reason is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"CI needs a browser: {reason}")
        pytest.skip(f"needs Chromium: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CRUNCH_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def site(browser: Any, live_server: Any, make_user: Any) -> Iterator[Site]:
    staff, _ = make_user("admin", admin=True)
    staff.set_password(PASSWORD)
    staff.save()
    page = Site(browser, live_server.url)
    page.login("admin", PASSWORD)
    yield page
    browser.quit()
    join_server_threads()


class Site:
    """The browser on the live server, with the few moves the tests make."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base

    def open(self, url: str, *, height: int = 800) -> None:
        self.viewport(height)
        self.driver.get(self.base + url)

    def viewport(self, height: int) -> None:
        """The page's own area (not the window's) is 1280 pixels wide, `height` high."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def until(self, condition: Callable[[], Any], what: str) -> Any:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.wait import WebDriverWait

        def check(_: Any) -> Any:
            try:
                return condition()
            except StaleElementReferenceException:
                return False  # the page swapped the element meanwhile: look again

        return WebDriverWait(self.driver, WAIT, poll_frequency=0.2).until(check, what)

    def login(self, username: str, password: str) -> None:
        self.open(reverse("admin:login") + "?next=" + reverse("admin:index"))
        self.css("#id_username").send_keys(username)
        self.css("#id_password").send_keys(password)
        self.css("#login-form [type=submit]").click()
        self.until(lambda: self.all("#crunch-queue-module"), "the admin index after login")

    def messages(self, level: str) -> list[str]:
        return [m.text for m in self.all(f"ul.messagelist li.{level}")]

    def run_action(self, action: str, jobs: list[Job]) -> None:
        """Tick `jobs` on the job list page shown and run `action` from the action bar."""
        from selenium.webdriver.support.select import Select

        for job in jobs:
            self.css(f"input.action-select[value='{job.pk}']").click()
        Select(self.css("select[name=action]")).select_by_value(action)
        self.css("button[name=index]").click()

    def screenshot(self, path: Path, *, full_page: bool = False) -> None:
        if full_page:
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.viewport(min(max(int(height), 800), 2400))
        self.driver.save_screenshot(str(path))
        assert path.stat().st_size > 10_000, f"{path} looks empty"


def world(make_user: Any) -> dict[str, Any]:
    """A queue that looks like a working day: three users, four nodes (one gone), jobs
    waiting at several priorities (one that no node can take), jobs running, some done."""
    alice, _ = make_user("alice")
    bob, _ = make_user("bob")
    carol, _ = make_user("carol")
    now = timezone.now()
    compute1 = make_node("compute-1", concurrency=2)
    compute2 = make_node("compute-2")
    make_node("compute-3")
    make_node("compute-4", alive=False)
    minutes = dt.timedelta(minutes=1)

    def queued(owner: Any, repo: str, script: str, priority: int, age: int, **kw: Any) -> Job:
        return make_job(
            owner, repository=repo, script=script, priority=priority, age=age * minutes, **kw
        )

    jobs = {
        "urgent": queued(bob, "bob/rnaseq", "star-align", 10, 3),
        "align": queued(alice, "alice/genomics", "bwa-mem", 5, 41),
        "call": queued(alice, "alice/genomics", "gatk-haplotypecaller", 5, 17),
        "huge": queued(
            carol,
            "carol/assembly",
            "spades",
            2,
            95,
            runtime_constraints={"min_ram_mb_per_node": 262144},
            scheduling_status=(
                "no registered node can run this job: it needs min_ram_mb_per_node 262144 "
                "(a node has 8192)"
            ),
        ),
        "checksum": queued(bob, "bob/rnaseq", "md5sum", 0, 130),
        "report": queued(carol, "carol/assembly", "quast-report", 0, 8),
    }

    def running(owner: Any, repo: str, script: str, node: Any, started: int) -> Job:
        return make_job(
            owner,
            state="Running",
            repository=repo,
            script=script,
            age=(started + 4) * minutes,
            started_at=now - started * minutes,
            worker_node_uuid=node.uuid,
            is_locked_by_uuid="zzzzz-tpzed-000000000000000",
        )

    jobs["sort"] = running(alice, "alice/genomics", "samtools-sort", compute1, 12)
    jobs["trim"] = running(bob, "bob/rnaseq", "trimmomatic", compute1, 3)
    jobs["index"] = running(carol, "carol/assembly", "bowtie2-build", compute2, 26)
    make_job(alice, state="Complete", repository="alice/genomics", script="fastqc")
    jobs["failed"] = make_job(bob, state="Failed", repository="bob/rnaseq", script="star-align")
    return jobs


# --- the tests ------------------------------------------------------------------------------


def test_queue_page_order_refresh_and_row_buttons(site: Site, make_user: Any, shots: Path) -> None:
    jobs = world(make_user)
    site.open(reverse("admin:index"))
    site.css("#crunch-queue-module a.viewlink").click()
    site.until(lambda: site.all("#queued-jobs"), "the queue page")
    expected = ["urgent", "align", "call", "huge", "checksum", "report"]
    rows = site.all("tr.queued-job")
    assert [r.get_attribute("data-uuid") for r in rows] == [jobs[k].uuid for k in expected]
    assert [r.find_element("css selector", "td.position").text for r in rows] == [
        str(n) for n in range(1, 7)
    ]
    assert "no registered node can run this job" in rows[3].text
    assert "waiting for a worker" in rows[0].text
    assert "6 queued (1 cannot be placed)" in site.css("#queue-summary").text
    assert "3 live, 2 busy, 1 idle" in site.css("#queue-summary").text
    running = {r.get_attribute("data-uuid"): r.text for r in site.all("tr.running-job")}
    assert set(running) == {jobs[k].uuid for k in ("sort", "trim", "index")}
    assert "compute-2" in running[jobs["index"].uuid]
    site.screenshot(shots / "admin-queue.png")

    # The page refreshes itself: a job queued now shows up without a reload.
    bob = User.objects.get(username="bob")
    late = make_job(bob, priority=7, repository="bob/rnaseq", script="salmon-quant")
    site.until(
        lambda: [r.get_attribute("data-uuid") for r in site.all("tr.queued-job")][1] == late.uuid,
        "the new job in second place after a refresh",
    )

    # A row's buttons: set the priority, then cancel (after the confirmation).
    row = site.css(f"tr[data-uuid='{jobs['checksum'].uuid}']")
    field = row.find_element("css selector", "input[name=priority]")
    field.clear()
    field.send_keys("20")
    row.find_element("css selector", "button[value=priority]").click()
    site.until(lambda: site.messages("success"), "the priority message")
    assert Job.objects.get(pk=jobs["checksum"].pk).priority == 20
    assert site.all("tr.queued-job")[0].get_attribute("data-uuid") == jobs["checksum"].uuid

    site.css(f"tr[data-uuid='{jobs['report'].uuid}'] button[value=cancel]").click()
    site.driver.switch_to.alert.accept()
    site.until(lambda: site.messages("success"), "the cancel message")
    assert Job.objects.get(pk=jobs["report"].pk).state == "Cancelled"
    assert jobs["report"].uuid not in [
        r.get_attribute("data-uuid") for r in site.all("tr.queued-job")
    ]


def test_cancel_and_change_priority_from_the_job_list(site: Site, make_user: Any) -> None:
    jobs = world(make_user)
    site.open(reverse("admin:jobs_job_changelist") + "?state__exact=Queued")
    site.run_action("cancel_jobs", [jobs["align"]])
    site.until(lambda: site.messages("success"), "the cancel message")
    assert site.messages("success") == [f"Cancelled {jobs['align'].uuid}."]
    assert Job.objects.get(pk=jobs["align"].pk).state == "Cancelled"
    assert Job.objects.get(pk=jobs["call"].pk).state == "Queued"

    site.run_action("change_priority", [jobs["call"], jobs["checksum"]])
    site.until(lambda: site.all("#change-priority-form"), "the priority form")
    field = site.css("#id_priority")
    field.clear()
    field.send_keys("99999999999")  # beyond the 32-bit column
    site.css("input[name=apply]").click()
    site.until(lambda: site.messages("error"), "the error message")
    form = site.css("#change-priority-form").text
    assert "Ensure this value is less than or equal to 2147483647." in form
    site.css("#id_priority").clear()
    site.css("#id_priority").send_keys("42")
    site.css("input[name=apply]").click()
    site.until(lambda: site.messages("success"), "the success message")
    for key in ("call", "checksum"):
        assert Job.objects.get(pk=jobs[key].pk).priority == 42
    assert Job.objects.get(pk=jobs["urgent"].pk).priority == 10


def test_requeue_a_failed_job(site: Site, api: Any, make_user: Any, tmp_path: Path) -> None:
    active, token = make_user("active")
    foo = hosted_foo(api, token, tmp_path)
    body = {
        "repository": "active/foo",
        "script": "hash",
        "script_version": "master",
        "script_parameters": {"input": "d41d8cd98f00b204e9800998ecf8427e+0"},
    }
    original = api.ok("POST", "jobs", body={"job": body}, token=token)
    Job.objects.filter(uuid=original["uuid"]).update(state="Failed", success=False)
    failed = Job.objects.get(uuid=original["uuid"])

    site.open(reverse("admin:jobs_job_changelist") + "?state__exact=Failed")
    site.run_action("requeue_jobs", [failed])
    site.until(lambda: site.messages("success"), "the requeue message")
    new = Job.objects.exclude(pk=failed.pk).get()
    assert site.messages("success") == [f"Requeued {failed.uuid} as {new.uuid}."]
    assert (new.state, new.owner_uuid, new.script_version) == ("Queued", active.uuid, foo.c3)
    assert new.script_parameters == body["script_parameters"]
    site.css("ul.messagelist li.success a").click()
    site.until(lambda: new.uuid in site.css("div.field-uuid").text, "the new job's page")


def test_job_page_follows_the_log_until_the_job_ends(
    site: Site, make_user: Any, shots: Path
) -> None:
    jobs = world(make_user)
    job = jobs["sort"]
    alice = User.objects.get(username="alice")
    image = make_collection(
        alice, {"sha256:4f2b1c0e.tar": b"image layers" * 100}, name="biocontainers/samtools"
    )
    parameters = {
        "input": "7c1e2f9a8b3d4c5e6f70819a2b3c4d5e+2048311",
        "reference": "GRCh38",
        "threads": 8,
        "memory": "6G",
    }
    JobReuse.objects.create(
        job_uuid=job.uuid,
        reused_by_user_uuid=alice.uuid,
        created_at=timezone.now(),
        supplied_script_version="v2.3",
    )
    Job.objects.filter(pk=job.pk).update(
        script_version="8f3c2a1d9e4b7c6a5f0e1d2c3b4a59687f6e5d4c",
        supplied_script_version="v2.3",
        script_parameters=parameters,
        script_parameters_digest=parameters_digest(parameters),
        runtime_constraints={"docker_image": "biocontainers/samtools", "min_cores_per_node": 4},
        docker_image_locator=image.portable_data_hash,
        description="Coordinate-sort the aligned reads of sample NA12878.",
    )
    stamp = timezone.now().strftime("%Y-%m-%d_%H:%M:%S")
    log_lines(
        job,
        [f"{stamp} {job.uuid} 4711 crunch: checking out 8f3c2a1d into the job's work tree"]
        + [
            f"{stamp} {job.uuid} 4711 stderr [bam_sort_core] merging from {n} files and 8 "
            "in-memory blocks..."
            for n in range(1, 60)
        ],
    )
    node = job.worker_node_uuid
    first = execution_start(job=job, node_uuid=node, hostname=None, log_seq=0)
    Execution.objects.filter(pk=first.pk).update(
        started_at=timezone.now() - dt.timedelta(minutes=9),
        finished_at=timezone.now() - dt.timedelta(minutes=6),
        state="Failed",
        exit_code=111,
        reason="temporary failure (exit 111): tried again",
    )
    execution_start(job=job, node_uuid=node, hostname=None, log_seq=21)
    site.open(reverse("admin:jobs_job_change", args=[job.pk]))
    executions = site.css("table.crunch-executions").text
    assert "Failed 111" in executions and "chunk 21" in executions, executions
    log = site.css("#job-log")
    assert "merging from 59 files" in log.text and "merging from 10 files" in log.text
    assert "merging from 9 files" not in log.text  # the last 50 lines only
    assert site.css("#job-log").get_attribute("data-live") == "1"

    LogChunk.objects.create(
        job_uuid=job.uuid,
        seq=60,
        text=f"{stamp} {job.uuid} 4711 stderr [bam_sort_core] wrote sorted.bam (4.1 GiB)\n",
        created_at=timezone.now(),
    )
    site.until(lambda: "wrote sorted.bam" in site.css("#job-log").text, "the new log line")
    site.screenshot(shots / "admin-job.png", full_page=True)

    Job.objects.filter(pk=job.pk).update(
        state="Complete", running=False, success=True, finished_at=timezone.now()
    )
    site.until(lambda: "log is complete" in site.css("#job-log-status").text, "the end of polling")


def test_job_page_draws_its_lineage_and_links_through_it(
    site: Site, make_user: Any, shots: Path
) -> None:
    from jobs.provenance import record_inputs

    alice, _ = make_user("alice")
    raw = make_collection(alice, {"reads.fastq": b"ACGT" * 500}, name="NA12878 reads")
    steps = [("align", "bwa mem"), ("sort", "samtools sort"), ("call", "gatk HaplotypeCaller")]
    previous = raw.portable_data_hash
    made = []
    for number, (name, tool) in enumerate(steps):
        output = make_collection(alice, {f"{name}.out": name.encode() * 300}, name=f"{name} output")
        log = make_collection(alice, {"job.log": f"log of {name}".encode()}, name=f"log of {name}")
        job = make_job(
            alice,
            state="Complete",
            age=dt.timedelta(hours=3 - number),
            command=tool.split(),
            parameters={"input": previous},
            output=output.portable_data_hash,
            log=log.portable_data_hash,
            started_at=timezone.now() - dt.timedelta(hours=3 - number),
            finished_at=timezone.now() - dt.timedelta(hours=2 - number),
            door=("arvados", "ray", "nomad")[number],
        )
        record_inputs(job)
        made.append(job)
        previous = output.portable_data_hash
    JobReuse.objects.create(
        job_uuid=made[1].uuid,
        reused_by_user_uuid=alice.uuid,
        created_at=timezone.now(),
        door="bacalhau",
        saved_core_seconds=3600.0,
    )
    site.open(reverse("admin:jobs_job_change", args=[made[2].pk]), height=1100)
    upstream = site.css("#lineage-upstream svg")
    drawn = [g.get_attribute("data-id") for g in upstream.find_elements("css selector", "g.node")]
    assert set(drawn) >= {made[0].uuid, made[1].uuid, made[2].uuid, raw.portable_data_hash}
    site.driver.execute_script(
        "document.getElementById('crunch-lineage').scrollIntoView({block: 'start'})"
    )
    site.screenshot(shots / "admin-lineage.png")
    # A box is a link to that job's page.
    box = upstream.find_element("css selector", f"g.node[data-id='{made[0].uuid}']")
    box.find_element("xpath", "..").click()
    site.until(lambda: made[0].uuid in site.driver.title, "the first job's page")
