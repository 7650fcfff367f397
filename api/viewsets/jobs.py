"""The jobs resource (spec §2, §3, §5): parse, call `jobs.reuse` / `jobs.services.jobs`, shape.

Besides the standard methods: create with find_or_create (and `explain`), queue,
queue_size, cancel (with cascade), lock and executions (each attempt to run the job).
`in git`/`in docker` filters work on list, queue and create.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.http import HttpResponse
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from api.discovery import BOOLEAN, INTEGER, LIST_PARAMETERS, STRING, query_parameter
from api.params import ListParams, parse_bool, parse_json_param, parse_list_params
from api.serializers import etag_of, plain
from api.viewsets.base import ArvadosViewSet
from api.viewsets.lineage import LINEAGE_METHODS, lineage_response
from jobs import provenance, savings
from jobs.exceptions import InvalidRequest
from jobs.filters import apply_filters
from jobs.models import Execution, Job, JobState
from jobs.queue import RUN_ORDER, queued_jobs
from jobs.reuse import flag, job_submit, translate_filters
from jobs.selection import Submission
from jobs.selectors import job_executions, node_uuids_by_job
from jobs.services.jobs import job_cancel, job_lock, require_attributes
from jobs.submit import job_submit_attrs

JOB_EXTRA_METHODS: dict[str, dict[str, Any]] = {
    "create": {
        "parameters": {
            "find_or_create": query_parameter(
                BOOLEAN,
                "Reuse an existing job that satisfies the filters instead of creating a new one.",
                default="false",
            ),
            "filters": query_parameter(
                {"type": "array"}, "Conditions a reused job must satisfy (with find_or_create)."
            ),
            "minimum_script_version": query_parameter(
                STRING, "The oldest commit a reused job may have run (with find_or_create)."
            ),
            "exclude_script_versions": query_parameter(
                {"type": "array"}, "Commits a reused job may not have run (with find_or_create)."
            ),
            "explain": query_parameter(
                BOOLEAN,
                "Add `reuse_explanation`: the filters used and, for each candidate job, why "
                "it was or was not reused.",
                default="false",
            ),
        },
    },
    "cancel": {
        "parameters": {
            "cascade": query_parameter(
                BOOLEAN, "Also cancel the job's child jobs (its components).", default="false"
            )
        },
    },
    "lock": {},
    "executions": {"response": {"$ref": "ExecutionList"}},
    **LINEAGE_METHODS,
    "invalidate": {
        "parameters": {"reason": query_parameter(STRING, "Why the output is bad (required).")},
        "response": {"$ref": "Job"},
    },
    "reuse_summary": {
        "parameters": {
            "by": query_parameter(STRING, "Group by user, project, door, day, week or month."),
            "since": query_parameter(STRING, "A duration back from now (7d, 24h, 2w) or a date."),
            "until": query_parameter(STRING, "A date: count submissions before it."),
        },
        "response": {},
    },
    "queue": {"parameters": LIST_PARAMETERS, "response": {"$ref": "JobList"}},
    "queue_size": {"response": {}},
    # Served by api/logstream.py (a streaming response, outside this viewset).
    "log_tail_follow": {
        "httpMethod": "GET",
        "path": "jobs/{uuid}/log_tail_follow",
        "description": (
            "Stream the job's log: with Accept: text/plain, text lines (queue status while "
            "it waits, the tail of the log, live lines, a last line with the end state); "
            "with Accept: text/event-stream, the same as Server-Sent Events."
        ),
        "parameters": {
            "buffer_size": query_parameter(
                INTEGER, "Bytes of earlier log to send first.", default="8192"
            ),
            "since": query_parameter(
                INTEGER, "Start at this log chunk number instead (0: the whole log)."
            ),
            "follow": query_parameter(
                BOOLEAN, "false: send what is stored now and close.", default="true"
            ),
        },
        # No "response": the SDK returns the raw bytes of the stream.
        "response": None,
    },
}


def render_execution(execution: Execution) -> dict[str, Any]:
    """One execution in its Arvados-style shape: kind, etag and its attributes."""
    values = {name: plain(execution.get(name)) for name in execution.all_api_fields()}
    return {"kind": execution.kind(), "etag": etag_of(values), **values}


class JobViewSet(ArvadosViewSet):
    model = Job
    resource = "jobs"
    singular = "job"
    EXTRA_METHODS: ClassVar[dict[str, dict[str, Any]]] = JOB_EXTRA_METHODS
    # Objects that methods return besides jobs: described in the discovery document.
    EXTRA_SCHEMAS: ClassVar[tuple[type[Any], ...]] = (Execution,)

    _nodes: dict[str, list[str]] | None = None

    # --- computed attributes -------------------------------------------------------------

    def prepare(self, objects: list[Any]) -> None:
        self._nodes = node_uuids_by_job([o.uuid for o in objects])

    def extra_attributes(self, obj: Any) -> dict[str, Any]:
        """node_uuids: nodes whose job_uuid is this job (spec), and the worker running it."""
        nodes = self._nodes if self._nodes is not None else node_uuids_by_job([obj.uuid])
        found = set(nodes.get(obj.uuid, []))
        if obj.worker_node_uuid and obj.state == JobState.RUNNING:
            found.add(obj.worker_node_uuid)
        return {"node_uuids": sorted(found)}

    # --- lists: job-specific filters ---------------------------------------------------

    def filtered(self, lp: ListParams) -> Any:
        readers = [a.user for a in self.readers()]
        translated = translate_filters(
            lp.filters, user=self.actor.user, readers=readers, submitted=None
        )
        queryset = apply_filters(
            self.base_queryset(), Job, filters=translated.filters, where=lp.where
        )
        return self.readable(queryset)

    # --- create with find_or_create --------------------------------------------------------

    def create(self, request: Request) -> Response:
        attrs = self.object_attrs()
        require_attributes(attrs)  # §3.1: before the parameters are parsed
        params = self.params
        if attrs.get("command") is not None:
            return self._create_command_job(attrs)
        filters = params.get("filters")
        exclude = params.get("exclude_script_versions")
        minimum = params.get("minimum_script_version")
        submission = job_submit(
            actor=self.actor,
            attrs=attrs,
            find_or_create=parse_bool(params.get("find_or_create"), "find_or_create", False),
            filters=parse_json_param(filters, "filters", list)
            if filters not in (None, "")
            else None,
            minimum_script_version=minimum if minimum not in (None, "") else None,
            exclude_script_versions=parse_json_param(exclude, "exclude_script_versions", list)
            if exclude not in (None, "")
            else None,
            readers=[a.user for a in self.readers()],
            explain=parse_bool(params.get("explain"), "explain", False),
        )
        return self._submitted(submission)

    def _submitted(self, submission: Submission) -> Response:
        """The answer to a create: the job, and why it was or was not reused if asked."""
        if not submission.reused:
            # A job made by this request: no node can name it yet (its uuid is new).
            self._nodes = {}
        body = self.render(submission.job, self.selected())
        if submission.explanation is not None:
            body["reuse_explanation"] = submission.explanation
        return Response(body)

    def _create_command_job(self, attrs: dict[str, Any]) -> Response:
        """A command job: reused on its exact inputs (working_dir, argv, environment, image,
        parameters), so the script-version filters have nothing to say about it."""
        params = self.params
        for name in ("filters", "minimum_script_version", "exclude_script_versions"):
            if params.get(name) not in (None, "", "[]"):
                raise InvalidRequest(
                    f"{name} applies to script jobs: a command job is reused only on "
                    "exactly the same inputs"
                )
        reuse = parse_bool(params.get("find_or_create"), "find_or_create", False)
        if "no_reuse" in attrs:
            reuse = not flag(attrs.pop("no_reuse"), "no_reuse")
        submission = job_submit_attrs(
            actor=self.actor,
            attrs=attrs,
            reuse=reuse,
            explain=parse_bool(params.get("explain"), "explain", False),
        )
        return self._submitted(submission)

    # --- the queue -------------------------------------------------------------------------

    @action(detail=False, methods=["get"])
    def queue(self, request: Request) -> Response:
        """List the queued jobs readable by the caller, in run order."""
        lp = parse_list_params(self.params, Job, Job.all_api_fields())
        if lp.order[:2] == ["-modified_at", "uuid"]:  # no valid order from the client
            lp.order = list(RUN_ORDER)
        return self.list_response(queued_jobs(self.filtered(lp)), lp)

    @action(detail=False, methods=["get"])
    def queue_size(self, request: Request) -> Response:
        """The number of queued jobs, all users' (spec §5.8): {"queue_size": N}."""
        return Response({"queue_size": queued_jobs().count()})

    # --- state changes ---------------------------------------------------------------------

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, uuid: str) -> Response:
        """Cancel a job that is queued or running."""
        job = self.get_object(uuid)
        cascade = parse_bool(self.params.get("cascade"), "cascade", False)
        return Response(self.render(job_cancel(actor=self.actor, job=job, cascade=cascade)))

    @action(detail=True, methods=["post"])
    def lock(self, request: Request, uuid: str) -> Response:
        """Lock a queued job to run it: it becomes Running, locked by the caller."""
        job = self.get_object(uuid)
        return Response(self.render(job_lock(actor=self.actor, job=job)))

    # --- executions ------------------------------------------------------------------------

    @action(detail=True, methods=["get"])
    def executions(self, request: Request, uuid: str) -> Response:
        """List the job's executions (each attempt to run it), in the order they started."""
        job = self.get_object(uuid)
        items = [render_execution(e) for e in job_executions(job_uuid=job.uuid)]
        return Response(
            {
                "kind": f"{Execution.kind()}List",
                "items": items,
                "items_available": len(items),
            }
        )

    # --- lineage and what reuse saved ------------------------------------------------------

    @action(detail=True, methods=["get"])
    def provenance(self, request: Request, uuid: str) -> HttpResponse:
        """What produced the job: its inputs, source tree, image, and the jobs upstream."""
        return lineage_response(self, uuid, downstream=False)

    @action(detail=True, methods=["get"])
    def used_by(self, request: Request, uuid: str) -> HttpResponse:
        """What was built on the job's output: every job that read it, and theirs."""
        return lineage_response(self, uuid, downstream=True)

    @action(detail=True, methods=["post"])
    def invalidate(self, request: Request, uuid: str) -> Response:
        """Mark the job's output as bad (admins): never reused again; answers the job and
        what was built on its output (`used_by`)."""
        job = provenance.invalidate(
            user=self.actor.user, uuid=self.get_object(uuid).uuid, reason=self.params.get("reason")
        )
        body = self.render(job)
        body["used_by"] = provenance.lineage(user=self.actor.user, ident=job.uuid, downstream=True)
        return Response(body)

    @action(detail=False, methods=["get"])
    def reuse_summary(self, request: Request) -> Response:
        """Reuse hits, misses (with the most common reason) and core-hours saved."""
        return Response(
            savings.summary(
                user=self.actor.user,
                by=self.params.get("by") or None,
                since=savings.parse_since(self.params.get("since")),
                until=savings.parse_since(self.params.get("until")),
            )
        )
