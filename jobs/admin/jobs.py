"""The jobs admin: the list with its filters and actions (cancel, change priority, requeue
as a new job), the queue page, and a job's page with its executions, reuse events and live
log. Every change goes through `jobs.services.jobs` as the staff user."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet, Subquery
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from jobs import manifests
from jobs.admin.lineage import admin_lineage
from jobs.admin.pages import (
    FILES_SHOWN,
    LOG_POLL_SECONDS,
    LOG_TAIL_LINES,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUE_ORDER,
    QUEUE_REFRESH_SECONDS,
    REQUEUE_STATES,
    WAITING,
    human_duration,
    log_tail,
    owner_names,
    queue_snapshot,
    queue_wait,
    requeue_attrs,
    run_duration,
)
from jobs.exceptions import CrunchError
from jobs.follow import chunk_lines
from jobs.models import (
    Collection,
    ExecutionState,
    Job,
    JobReuse,
    JobState,
    LogChunk,
    Node,
    User,
)
from jobs.models.jobs import DESCRIPTION_MAX
from jobs.selectors import job_executions
from jobs.services.jobs import SERVICE as JOB_SERVICE
from jobs.services.jobs import job_cancel
from jobs.services.objects import Actor
from jobs.spec import what_runs


def _uuids(uuids: list[str], shown: int = 10) -> str:
    more = len(uuids) - shown
    return ", ".join(uuids[:shown]) + (f" and {more} more" if more > 0 else "")


def _pretty_json(value: Any) -> SafeString:
    if value is None:
        return format_html('<span class="quiet">{}</span>', "null")
    return format_html(
        '<pre class="crunch-json">{}</pre>', json.dumps(value, indent=2, sort_keys=True)
    )


def _collection_link(pdh: str | None) -> SafeString | str:
    """A portable data hash as a link to its collection's admin page, with the API path of
    its files and the first few file names."""
    if not pdh:
        return "-"
    found = Collection.objects.filter(portable_data_hash=pdh).order_by("created_at").first()
    files_path = f"/arvados/v1/collections/{pdh}/files/"
    if found is None:
        return format_html("<code>{}</code> (no collection record)", pdh)
    link = format_html(
        '<a href="{}"><code>{}</code></a> &middot; API: <code>{}</code>',
        reverse("admin:jobs_collection_change", args=[found.pk]),
        pdh,
        files_path,
    )
    try:
        files = manifests.manifest_tree(found.manifest_text or "").files
    except CrunchError:
        return link
    names = sorted(files)
    listed = format_html_join(
        "",
        "<div><code>{}</code> <span class='quiet'>{} bytes</span></div>",
        ((name, sum(p.length for p in files[name])) for name in names[:FILES_SHOWN]),
    )
    more = len(names) - FILES_SHOWN
    tail = format_html("<div>&hellip; and {} more</div>", more) if more > 0 else ""
    return format_html('{}<div class="crunch-files">{}{}</div>', link, listed, tail)


class ReusedFilter(admin.SimpleListFilter):
    """Jobs that find_or_create handed back at least once (JobReuse rows), or never."""

    title = "reused"
    parameter_name = "reused"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Reused"), ("no", "Never reused")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        reused = Exists(JobReuse.objects.filter(job_uuid=OuterRef("uuid")))
        if self.value() == "yes":
            return queryset.filter(reused)
        if self.value() == "no":
            return queryset.filter(~reused)
        return queryset


class OwnerFilter(admin.SimpleListFilter):
    title = "owner"
    parameter_name = "owner"
    LIMIT = 200

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        uuids = list(
            Job.objects.order_by("owner_uuid")
            .values_list("owner_uuid", flat=True)
            .distinct()[: self.LIMIT]
        )
        names = owner_names(uuids)
        return sorted(((u, names.get(u, u)) for u in uuids), key=lambda pair: pair[1])

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        return queryset.filter(owner_uuid=value) if value else queryset


class JobForm(forms.ModelForm):
    """What an operator may change on a job: its priority and description."""

    priority = forms.IntegerField(
        min_value=PRIORITY_MIN,
        max_value=PRIORITY_MAX,
        help_text="Higher runs first; it matters while the job is queued.",
    )
    description = forms.CharField(
        required=False, max_length=DESCRIPTION_MAX, widget=forms.Textarea(attrs={"rows": 3})
    )

    class Meta:
        model = Job
        fields = ("priority", "description")


class PriorityForm(forms.Form):
    priority = forms.IntegerField(
        label="New priority", min_value=PRIORITY_MIN, max_value=PRIORITY_MAX
    )


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Jobs. What ran (repository, commit, parameters, image) and the execution record are
    read-only: they are what reuse and provenance rely on. Operators change priority and
    description, cancel, and requeue a failed or cancelled job as a new job, all through
    the job service acting as the staff user."""

    form = JobForm
    list_display = (
        "uuid",
        "state",
        "what_runs",
        "short_version",
        "priority",
        "owner",
        "was_reused",
        "created_at",
        "finished_at",
    )
    list_filter = (
        "state",
        "repository",
        "script",
        OwnerFilter,
        ReusedFilter,
        "nondeterministic",
    )
    search_fields = (
        "uuid",
        "script",
        "script_version",
        "supplied_script_version",
        "repository",
        "owner_uuid",
        "output",
    )
    ordering = ("-created_at",)
    actions = ("cancel_jobs", "change_priority", "requeue_jobs")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "uuid",
                    "state",
                    "owner",
                    "priority",
                    "description",
                    "timings",
                    "placement",
                    "worker_node",
                )
            },
        ),
        (
            "What runs",
            {
                "fields": (
                    "repository",
                    "script",
                    "script_version",
                    "supplied_script_version",
                    "command",
                    "working_dir",
                    "environment",
                    "labels",
                    "meta",
                    "parameters",
                    "constraints",
                    "image",
                    "arvados_sdk_version",
                    "nondeterministic",
                )
            },
        ),
        ("Executions", {"fields": ("executions",)}),
        ("Results", {"fields": ("output_collection", "log_collection")}),
        ("Reuse", {"fields": ("reuse_events",)}),
        (
            "Record",
            {
                "classes": ("collapse",),
                "fields": (
                    "created_at",
                    "started_at",
                    "finished_at",
                    "cancelled_at",
                    "cancelled_by_user_uuid",
                    "cancelled_by_client_uuid",
                    "is_locked_by_uuid",
                    "running",
                    "success",
                    "tasks",
                    "children",
                    "script_parameters_digest",
                    "reuse_key",
                    "submit_id",
                    "owner_uuid",
                    "modified_at",
                    "modified_by_user_uuid",
                    "modified_by_client_uuid",
                ),
            },
        ),
    )
    # Everything the page shows is read-only except what JobForm lets an operator change.
    readonly_fields = tuple(
        name
        for _title, section in fieldsets
        for name in section["fields"]
        if isinstance(name, str) and name not in JobForm.Meta.fields
    )

    # --- pages and urls ------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("queue/", wrap(self.queue_view), name=f"{info}_queue"),
            path("<path:object_id>/log/", wrap(self.log_tail_view), name=f"{info}_log"),
            path("<path:object_id>/log.txt", wrap(self.log_text_view), name=f"{info}_log_text"),
            *super().get_urls(),
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                owner_name=Subquery(
                    User.objects.filter(uuid=OuterRef("owner_uuid")).values("username")[:1]
                ),
                reuse_seen=Exists(JobReuse.objects.filter(job_uuid=OuterRef("uuid"))),
            )
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted through the API (or requeued from here)

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        JOB_SERVICE.delete(actor=self._actor(request), obj=obj)  # its links go too

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        actor = self._actor(request)
        for job in queryset:
            JOB_SERVICE.delete(actor=actor, obj=job)

    def queue_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise DjangoPermissionDenied
        if request.method == "POST":
            if not self.has_change_permission(request):
                raise DjangoPermissionDenied
            self._queue_change(request)
            return HttpResponseRedirect(request.path)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Job queue",
            "refresh_seconds": QUEUE_REFRESH_SECONDS,
            **queue_snapshot(timezone.now()),
        }
        return TemplateResponse(request, "admin/jobs/job/queue.html", context)

    def _queue_change(self, request: HttpRequest) -> None:
        """One row's button on the queue page: cancel, or set the priority."""
        uuid = request.POST.get("uuid", "")
        job = Job.objects.filter(uuid=uuid).first()
        operation = request.POST.get("op")
        if job is None:
            self.message_user(request, f"No job {uuid!r}.", messages.ERROR)
        elif operation == "cancel":
            self._cancel(request, [job])
        elif operation == "priority":
            form = PriorityForm(request.POST)
            if form.is_valid():
                self._set_priority(request, [job], form.cleaned_data["priority"])
            else:
                problems = "; ".join(str(e) for e in form.errors.get("priority", ["invalid"]))
                self.message_user(request, f"Priority of {uuid}: {problems}", messages.ERROR)
        else:
            self.message_user(request, "Unknown operation.", messages.ERROR)

    def _job_or_404(self, request: HttpRequest, object_id: str) -> Job:
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404("no such job")
        if not self.has_view_permission(request, job):
            raise DjangoPermissionDenied
        return job

    def log_tail_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The last lines of the log, polled by the job page while the job is active."""
        return JsonResponse(log_tail(self._job_or_404(request, object_id)))

    def log_text_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The whole log as stored so far, as plain text."""
        job = self._job_or_404(request, object_id)
        text = "".join(
            chunk_lines(chunk)
            for chunk in LogChunk.objects.filter(job_uuid=job.uuid)
            .order_by("seq")
            .values_list("text", flat=True)
            .iterator(chunk_size=500)
        )
        response = HttpResponse(text, content_type="text/plain; charset=utf-8")
        response["X-Content-Type-Options"] = "nosniff"
        return response

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = dict(extra_context or {})
        job = self.get_object(request, unquote(object_id))
        if job is not None:
            extra["log_tail"] = log_tail(job)
            extra["log_tail_lines"] = LOG_TAIL_LINES
            extra["log_poll_ms"] = LOG_POLL_SECONDS * 1000
            extra["log_poll_seconds"] = LOG_POLL_SECONDS
            extra["lineage"] = admin_lineage(request.user, job.uuid)
        return super().change_view(request, object_id, form_url, extra)

    def save_model(
        self, request: HttpRequest, obj: Job, form: forms.ModelForm, change: bool
    ) -> None:
        """Priority and description go through the job service (its checks, the
        modified_by bookkeeping), applied to the row as it is now, not as it was when the
        page was loaded."""
        attrs = {name: form.cleaned_data[name] for name in form.changed_data}
        if "description" in attrs:
            attrs["description"] = attrs["description"] or None
        if not attrs:
            return
        try:
            with transaction.atomic():
                current = Job.objects.select_for_update().get(pk=obj.pk)
                JOB_SERVICE.update(actor=self._actor(request), obj=current, attrs=attrs)
        except CrunchError as exc:
            self.message_user(request, f"{obj.uuid} was not changed: {exc}", messages.ERROR)

    # --- actions -------------------------------------------------------------------------

    @staticmethod
    def _actor(request: HttpRequest) -> Actor:
        user = request.user
        assert isinstance(user, User)  # the admin's users are jobs.models.User
        return Actor(user=user)

    def _cancel(self, request: HttpRequest, jobs: Iterable[Job]) -> None:
        cancelled: list[str] = []
        already: list[str] = []
        for job in jobs:
            if job.state == JobState.CANCELLED:
                already.append(job.uuid)
                continue
            try:
                job_cancel(actor=self._actor(request), job=job)
            except CrunchError as exc:
                self.message_user(request, f"Could not cancel {job.uuid}: {exc}", messages.ERROR)
            else:
                cancelled.append(job.uuid)
        if cancelled:
            self.message_user(request, f"Cancelled {_uuids(cancelled)}.", messages.SUCCESS)
        if already:
            self.message_user(request, f"Already cancelled: {_uuids(already)}.", messages.WARNING)

    def _set_priority(self, request: HttpRequest, jobs: Iterable[Job], priority: int) -> None:
        changed: list[str] = []
        for job in jobs:
            try:
                with transaction.atomic():
                    current = Job.objects.select_for_update().get(pk=job.pk)
                    JOB_SERVICE.update(
                        actor=self._actor(request), obj=current, attrs={"priority": priority}
                    )
            except CrunchError as exc:
                self.message_user(
                    request, f"Could not change the priority of {job.uuid}: {exc}", messages.ERROR
                )
            else:
                changed.append(job.uuid)
        if changed:
            self.message_user(
                request, f"Priority {priority} for {_uuids(changed)}.", messages.SUCCESS
            )

    def _requeue(self, request: HttpRequest, jobs: Iterable[Job]) -> None:
        actor = self._actor(request)
        created: list[tuple[Job, Job]] = []
        for job in jobs:
            if job.state not in REQUEUE_STATES:
                self.message_user(
                    request,
                    f"{job.uuid} is {job.state}: only failed or cancelled jobs are requeued.",
                    messages.ERROR,
                )
                continue
            try:
                # Committed job by job: the new job is dispatched when its row commits.
                with transaction.atomic():
                    new = JOB_SERVICE.create(actor=actor, attrs=requeue_attrs(job, by=actor.user))
            except CrunchError as exc:
                self.message_user(request, f"Could not requeue {job.uuid}: {exc}", messages.ERROR)
            else:
                created.append((job, new))
        if created:
            links = format_html_join(
                ", ",
                '{} as <a href="{}">{}</a>',
                (
                    (old.uuid, reverse("admin:jobs_job_change", args=[new.pk]), new.uuid)
                    for old, new in created
                ),
            )
            self.message_user(request, format_html("Requeued {}.", links), messages.SUCCESS)

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._cancel(request, queryset.order_by(*QUEUE_ORDER))

    @admin.action(description="Change priority of selected jobs…", permissions=["change"])
    def change_priority(
        self, request: HttpRequest, queryset: QuerySet[Job]
    ) -> TemplateResponse | None:
        """Asks for the new priority on a page of its own, then applies it to each job."""
        jobs = list(queryset.order_by(*QUEUE_ORDER))
        if "apply" in request.POST:
            form = PriorityForm(request.POST)
            if form.is_valid():
                self._set_priority(request, jobs, form.cleaned_data["priority"])
                return None
            self.message_user(request, "Please correct the priority below.", messages.ERROR)
        else:
            current = {job.priority for job in jobs}
            form = PriorityForm(initial={"priority": current.pop()} if len(current) == 1 else None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Change priority",
            "jobs": jobs,
            "form": form,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "select_across": request.POST.get("select_across", "0"),
            "media": self.media,
        }
        return TemplateResponse(request, "admin/jobs/job/change_priority.html", context)

    @admin.action(
        description="Requeue selected failed or cancelled jobs as new jobs", permissions=["change"]
    )
    def requeue_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._requeue(request, queryset.order_by("created_at", "id"))

    # --- columns and read-only fields ----------------------------------------------------

    @admin.display(description="commit", ordering="script_version")
    def short_version(self, job: Job) -> str:
        return (job.script_version or "")[:12]

    @admin.display(description="runs", ordering="script")
    def what_runs(self, job: Job) -> str:
        text = what_runs(job)
        return text if len(text) <= 70 else text[:69] + "…"

    @admin.display(description="owner", ordering="owner_name")
    def owner(self, job: Job) -> str:
        name = getattr(job, "owner_name", None) or owner_names([job.owner_uuid]).get(job.owner_uuid)
        return f"{name} ({job.owner_uuid})" if name else job.owner_uuid

    @admin.display(description="reused", boolean=True, ordering="reuse_seen")
    def was_reused(self, job: Job) -> bool:
        return bool(getattr(job, "reuse_seen", False))

    @admin.display(description="script_parameters")
    def parameters(self, job: Job) -> SafeString:
        return _pretty_json(job.script_parameters)

    @admin.display(description="runtime_constraints")
    def constraints(self, job: Job) -> SafeString:
        return _pretty_json(job.runtime_constraints)

    @admin.display(description="tasks_summary")
    def tasks(self, job: Job) -> SafeString:
        return _pretty_json(job.tasks_summary)

    @admin.display(description="components")
    def children(self, job: Job) -> SafeString:
        return _pretty_json(job.components)

    @admin.display(description="image (docker_image_locator)")
    def image(self, job: Job) -> SafeString | str:
        return _collection_link(job.docker_image_locator)

    @admin.display(description="output")
    def output_collection(self, job: Job) -> SafeString | str:
        return _collection_link(job.output)

    @admin.display(description="log")
    def log_collection(self, job: Job) -> SafeString | str:
        return _collection_link(job.log)

    @admin.display(description="timings")
    def timings(self, job: Job) -> SafeString:
        now = timezone.now()

        def stamp(value: dt.datetime | None) -> str:
            return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"

        return format_html(
            '<table class="crunch-timings"><thead><tr><th>created</th><th>started</th>'
            "<th>ended</th><th>queue wait</th><th>run</th></tr></thead><tbody><tr>"
            '<td>{}</td><td>{}</td><td>{}</td><td class="waited">{}</td><td class="ran">{}</td>'
            "</tr></tbody></table>",
            stamp(job.created_at),
            stamp(job.started_at),
            stamp(job.finished_at or job.cancelled_at),
            human_duration(queue_wait(job, now)),
            human_duration(run_duration(job, now)),
        )

    @admin.display(description="placement (scheduling_status)")
    def placement(self, job: Job) -> str:
        if job.state != JobState.QUEUED:
            return job.scheduling_status or "-"
        return job.scheduling_status or WAITING

    @admin.display(description="worker node")
    def worker_node(self, job: Job) -> SafeString | str:
        if not job.worker_node_uuid:
            return "-"
        node = Node.objects.filter(uuid=job.worker_node_uuid).first()
        if node is None:
            return job.worker_node_uuid
        return format_html(
            '<a href="{}">{}</a> ({})',
            reverse("admin:jobs_node_change", args=[node.pk]),
            node.hostname or node.uuid,
            node.uuid,
        )

    @admin.display(description="executions")
    def executions(self, job: Job) -> SafeString | str:
        """Each attempt to run the job: where, how it ended, and where its log begins."""
        shown = list(job_executions(job_uuid=job.uuid))
        if not shown:
            return "none yet: no worker has started the job"
        now = timezone.now()

        def stamp(value: dt.datetime | None) -> str:
            return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"

        def duration(e: Any) -> str:
            end = e.finished_at or (now if e.state == ExecutionState.RUNNING else None)
            return human_duration(end - e.started_at if end else None)

        rows = format_html_join(
            "",
            '<tr class="execution-{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            '<td>{}</td><td>{}</td><td>{}</td><td>chunk {}</td><td class="reason">{}</td></tr>',
            (
                (
                    e.state.lower(),
                    e.attempt if not e.replica else f"{e.attempt} (replica {e.replica})",
                    e.hostname or "-",
                    e.node_uuid or "-",
                    e.state,
                    "-" if e.exit_code is None else e.exit_code,
                    stamp(e.started_at),
                    stamp(e.finished_at),
                    duration(e),
                    e.log_seq,
                    e.reason or "",
                )
                for e in shown
            ),
        )
        return format_html(
            '<table class="crunch-executions"><thead><tr><th>attempt</th><th>host</th>'
            "<th>node</th><th>state</th><th>exit code</th><th>started</th><th>ended</th>"
            "<th>ran</th><th>log from</th><th>reason</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="reuse events")
    def reuse_events(self, job: Job) -> SafeString | str:
        events = JobReuse.objects.filter(job_uuid=job.uuid).order_by("-created_at", "-id")
        shown = list(events[:FILES_SHOWN])
        if not shown:
            return "never handed back by find_or_create"
        total = events.count()
        names = owner_names(e.reused_by_user_uuid for e in shown)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
            (
                (
                    timezone.localtime(e.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                    names.get(e.reused_by_user_uuid, e.reused_by_user_uuid),
                    e.supplied_script_version or "-",
                    json.dumps(e.filters) if e.filters else "(from the submitted job)",
                )
                for e in shown
            ),
        )
        listing = reverse("admin:jobs_jobreuse_changelist") + f"?job_uuid={job.uuid}"
        return format_html(
            '<table class="crunch-reuses"><thead><tr><th>when</th><th>by</th>'
            "<th>version asked</th><th>filters</th></tr></thead><tbody>{}</tbody></table>"
            '<p><a href="{}">{} reuse event{}</a></p>',
            rows,
            listing,
            total,
            "" if total == 1 else "s",
        )


@admin.register(JobReuse)
class JobReuseAdmin(admin.ModelAdmin):
    """Each time find_or_create handed back an existing job. A record: read-only."""

    list_display = ("created_at", "job", "reused_by", "supplied_script_version")
    search_fields = ("job_uuid", "reused_by_user_uuid", "supplied_script_version")
    ordering = ("-created_at", "-id")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="job", ordering="job_uuid")
    def job(self, reuse: JobReuse) -> SafeString | str:
        job = Job.objects.filter(uuid=reuse.job_uuid).only("pk").first()
        if job is None:
            return reuse.job_uuid
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:jobs_job_change", args=[job.pk]), reuse.job_uuid
        )

    @admin.display(description="reused by", ordering="reused_by_user_uuid")
    def reused_by(self, reuse: JobReuse) -> str:
        name = owner_names([reuse.reused_by_user_uuid]).get(reuse.reused_by_user_uuid)
        return f"{name} ({reuse.reused_by_user_uuid})" if name else reuse.reused_by_user_uuid


# The admin's home page links to the queue page.
