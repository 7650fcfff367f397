"""The Bacalhau-style door: the v1 orchestrator API (`/api/v1/orchestrator/...`), the
subset `bacalhau-apiclient` 1.4 and the Bacalhau CLI use.

A Bacalhau job is a core job template (jobs/templates.py) in the Crunch project its
namespace names, whose schedule is its type (batch: `Count` instances once; ops: one per
suitable node; daemon: the same, and nodes joining later; service: `Count` kept running).
Each instance is an ordinary Crunch job (door `bacalhau`) with its executions, logs,
provenance and admin page. Re-submitting a job with the same `Name` in the same namespace
updates that job: the same ID, and a new `Version` when the spec changed.
"""

from __future__ import annotations

import base64
import ipaddress
import posixpath
import socket
import urllib.parse
import urllib.request
import uuid as uuidlib
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from api.bacalhau import records, wire
from api.bacalhau.base import (
    actor_of,
    bacalhau_view,
    body_of,
    find_job,
    namespace_name,
    namespace_owner,
)
from api.bacalhau.wire import BacalhauError
from jobs import placement
from jobs.keep.archives import collection_with_files
from jobs.keep.collections import collection_readable
from jobs.models import Node
from jobs.services.objects import Actor
from jobs.spec import JobSpec
from jobs.templates import (
    template_check,
    template_reconcile,
    template_register,
    template_reusable,
    template_stop,
    templates_readable,
)

DOWNLOAD_MAX = 256 * 1024 * 1024
DOWNLOAD_TIMEOUT = 60
LIST_MAX = 1000


def _bool(value: str | None, name: str) -> bool:
    if value in (None, "", "0", "f", "F", "false", "False", "FALSE"):
        return False
    if value in ("1", "t", "T", "true", "True", "TRUE"):
        return True
    raise wire.bad(f"{name} must be true or false")


def _limit(request: HttpRequest, default: int) -> int:
    text = request.GET.get("limit") or ""
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise wire.bad("limit must be a whole number") from None
    if value < 0:
        raise wire.bad("limit must be at least 0")
    return value


# --- submit --------------------------------------------------------------------------------------


@bacalhau_view(("GET", "PUT", "POST"))
def jobs(request: HttpRequest) -> HttpResponseBase:
    if request.method == "GET":
        return list_jobs(request)
    return put_job(request)


def put_job(request: HttpRequest) -> HttpResponseBase:
    actor = actor_of(request)
    body = body_of(request)
    parsed = wire.parse_job(body)
    namespace = parsed.namespace or (body.get("namespace") if isinstance(body, dict) else None)
    if namespace is not None and not isinstance(namespace, str):
        raise wire.bad("namespace must be a string")
    owner = namespace_owner(actor, namespace, write=True)
    _check_placement(parsed)
    name = parsed.name
    existing = (
        templates_readable(actor, wire.DOOR).filter(owner_uuid=owner, name=name).first()
        if name
        else None
    )
    job_id = existing.external_id if existing is not None and existing.external_id else None
    job_id = job_id or wire.new_job_id()
    name = name or job_id
    ns_name = namespace_name(owner, actor)
    spec = JobSpec(
        command=tuple(parsed.command),
        image=parsed.image,
        environment=parsed.environment,
        parameters={"inputs": {i.target: i.source for i in parsed.inputs if i.kind == "crunch"}}
        if parsed.inputs
        else {},
        runtime_constraints=parsed.runtime_constraints,
        labels=parsed.labels,
        meta=parsed.meta,
        priority=parsed.priority,
        owner_uuid=owner,
        door=wire.DOOR,
        run_environment={
            "BACALHAU_JOB_ID": job_id,
            "BACALHAU_JOB_NAME": name,
            "BACALHAU_JOB_NAMESPACE": ns_name,
            "BACALHAU_JOB_TYPE": parsed.type,
        },
    )
    for item in parsed.inputs:
        if (
            item.kind == "crunch"
            and collection_readable(users=[actor.user], identifier=item.source) is None
        ):
            raise wire.bad(f"input collection {item.source} is not readable by you")
    template_check(actor=actor, spec=spec)  # the image, the constraints: nothing is created yet
    spec = _with_inputs(actor, parsed, spec, owner, name)
    warnings = list(parsed.warnings)
    if parsed.reuse_requested and parsed.type == "batch":
        earlier = template_reusable(actor=actor, door=wire.DOOR, spec=spec, count=parsed.count)
        if earlier is not None:
            warnings.append(
                f"identical to job {earlier.external_id} (same image, command, environment and "
                "inputs), which completed: its results are returned and nothing runs again"
            )
            return JsonResponse(
                {
                    "JobID": earlier.external_id or earlier.name,
                    "EvaluationID": str(uuidlib.uuid4()),
                    "Warnings": warnings,
                }
            )
    stored = {
        k: v
        for k, v in {
            "command": list(spec.command or ()),
            "image": spec.image,
            "working_dir": spec.working_dir,
            "environment": dict(spec.environment),
            "parameters": dict(spec.parameters),
            "runtime_constraints": dict(spec.runtime_constraints),
            "labels": dict(spec.labels),
            "meta": dict(spec.meta),
            "priority": spec.priority,
            "run_environment": dict(spec.run_environment),
        }.items()
        if v not in (None, {}, [])
    }
    with transaction.atomic():
        template, _ = template_register(
            actor=actor,
            owner_uuid=owner,
            door=wire.DOOR,
            name=name,
            spec=stored,
            definition=parsed.document | {"ID": job_id},
            schedule=parsed.schedule,
            count=parsed.count,
            reuse=parsed.reuse_requested,
            external_id=job_id,
        )
        template_reconcile(template, actor=actor)
    return JsonResponse(
        {
            "JobID": template.external_id or template.name,
            "EvaluationID": str(uuidlib.uuid4()),
            "Warnings": warnings,
        }
    )


def _check_placement(parsed: wire.Parsed) -> None:
    """Refuse, in Bacalhau's words with each node's reason, a job no live node can run.
    (With no live node at all, the job waits for one.)"""
    nodes = placement.live_node_views()
    if not nodes:
        return
    req = placement.Requirements.of(parsed.runtime_constraints)
    verdict = placement.verdict(req, nodes, requested=1)
    if verdict.message is None:
        return
    reasons = verdict.message.split("; ")[1:]
    raise wire.bad(
        f"not enough nodes to run job. requested: {parsed.count}, available: {len(nodes)}, "
        f"suitable: {len(verdict.suitable)}. " + "; ".join(reasons)
    )


def _with_inputs(
    actor: Actor, parsed: wire.Parsed, spec: JobSpec, owner: str, name: str
) -> JobSpec:
    """Each input as a collection (a URL is downloaded once, here, whatever Count), all of
    them placed in the job's working tree under `inputs/<target>`, which the container sees
    at the target path. The inputs' PDHs are the job's parameters (its identity, its
    lineage)."""
    if not parsed.inputs:
        return spec
    import dataclasses

    pdhs: dict[str, str] = {}
    trees: dict[str, str] = {}
    for item in parsed.inputs:
        pdh = item.source
        if item.kind == "urlDownload":
            data, filename = _download(item.source)
            pdh = collection_with_files(
                actor=actor,
                base_pdh=None,
                files={filename: data},
                owner_uuid=owner,
                name=f"Download of {item.source}"[:255],
            ).portable_data_hash
        pdhs[item.target] = pdh
        trees["inputs/" + item.target.strip("/")] = pdh
    working = collection_with_files(
        actor=actor,
        base_pdh=None,
        files={},
        collections=trees,
        owner_uuid=owner,
        name=f"Inputs of {name}"[:255],
    )
    return dataclasses.replace(
        spec, working_dir=working.portable_data_hash, parameters={"inputs": pdhs}
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could lead anywhere: it is answered as the error it is


def _public(host: str, port: int) -> None:
    """Refuse a host that resolves to the server's own networks (unless allowed)."""
    if settings.CRUNCH_URL_INPUTS_PRIVATE:
        return
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise wire.bad(f"input source host {host}: {exc.strerror or exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise wire.bad(
                f"input source host {host} is on a private network ({address}): URL inputs "
                "are fetched by the server, from public addresses only "
                "(CRUNCH_URL_INPUTS_PRIVATE=true allows others)"
            )


def _download(url: str) -> tuple[bytes, str]:
    parsed = urllib.parse.urlsplit(url)
    filename = posixpath.basename(urllib.parse.unquote(parsed.path)) or "download"
    if filename in (".", "..") or "\x00" in filename or "/" in filename:
        filename = "download"
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise wire.bad(f"input source {url}: the port is not a number") from None
    _public(parsed.hostname or "", port)
    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": "crunch-bacalhau-door"})
    try:
        with opener.open(request, timeout=DOWNLOAD_TIMEOUT) as response:
            data = response.read(DOWNLOAD_MAX + 1)
    except Exception as exc:
        raise wire.bad(f"input source {url}: download failed: {exc}") from None
    if len(data) > DOWNLOAD_MAX:
        raise wire.bad(f"input source {url} is larger than {DOWNLOAD_MAX} bytes")
    return data, filename


# --- read --------------------------------------------------------------------------------------


def _record(actor: Actor, job_id: str) -> records.Record:
    template = find_job(actor, job_id)
    return records.load(template, actor, namespace_name(template.owner_uuid, actor))


@bacalhau_view(("GET", "DELETE"))
def job(request: HttpRequest, job_id: str) -> HttpResponseBase:
    actor = actor_of(request)
    if request.method == "DELETE":
        return stop_job(request, actor, job_id)
    record = _record(actor, job_id)
    include = {p.strip() for p in (request.GET.get("include") or "").split(",") if p.strip()}
    body: dict[str, Any] = {"Job": records.job_json(record)}
    if "history" in include:
        body["History"] = {
            "Items": records.history_items(record, event_type="all", execution_id="", node=""),
            "NextToken": "",
        }
    if "executions" in include:
        body["Executions"] = {
            "Items": records.execution_items(record, with_output=True),
            "NextToken": "",
        }
    return JsonResponse(body)


def stop_job(request: HttpRequest, actor: Actor, job_id: str) -> HttpResponseBase:
    template = find_job(actor, job_id)
    template_stop(actor=actor, template=template, cancel_instances=True)
    return JsonResponse({"EvaluationID": str(uuidlib.uuid4())})


@bacalhau_view(("GET",))
def executions(request: HttpRequest, job_id: str) -> HttpResponseBase:
    actor = actor_of(request)
    order_by = request.GET.get("order_by") or ""
    if order_by not in ("", "create_time", "created_at", "modify_time", "modified_at"):
        raise wire.bad(f"OrderBy {order_by} not supported for listJobExecutions")
    reverse = _bool(request.GET.get("reverse"), "reverse")
    limit = _limit(request, 0)
    record = _record(actor, job_id)
    items = records.execution_items(record, with_output=True)
    key = "ModifyTime" if order_by.startswith("modif") else "CreateTime"
    items.sort(key=lambda i: i[key], reverse=reverse)
    if limit:
        items = items[:limit]
    return JsonResponse({"Items": items, "NextToken": ""})


@bacalhau_view(("GET",))
def history(request: HttpRequest, job_id: str) -> HttpResponseBase:
    actor = actor_of(request)
    event_type = request.GET.get("event_type") or "all"
    if event_type not in ("all", "job", "execution"):
        raise wire.bad(f"invalid event type: {event_type[:40]} (all, job or execution)")
    record = _record(actor, job_id)
    items = records.history_items(
        record,
        event_type=event_type,
        execution_id=request.GET.get("execution_id") or "",
        node=request.GET.get("node_id") or "",
    )
    return JsonResponse({"Items": items, "NextToken": ""})


@bacalhau_view(("GET",))
def logs_text(request: HttpRequest, job_id: str) -> HttpResponseBase:
    """A plain GET of the logs (what bacalhau-apiclient's `orchestratorlogs` does): the
    program's output so far, as a JSON string. The WebSocket (api/bacalhau/logs.py) follows."""
    actor = actor_of(request)
    record = _record(actor, job_id)
    items = records.execution_items(record, with_output=True)
    text = "".join((i["RunOutput"] or {}).get("Stdout", "") for i in items)
    return JsonResponse(text, safe=False)


@bacalhau_view(("GET",))
def results(request: HttpRequest, job_id: str) -> HttpResponseBase:
    actor = actor_of(request)
    record = _record(actor, job_id)
    return JsonResponse({"Items": records.results(record), "NextToken": ""})


# --- list --------------------------------------------------------------------------------------


def _token(order_by: str, reverse: bool, limit: int, offset: int) -> str:
    raw = f"{order_by}:{'Y' if reverse else 'N'}:{limit}:{offset}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _untoken(token: str) -> tuple[str, bool, int, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        order_by, rev, limit, offset = raw.split(":")
        if rev not in ("Y", "N") or order_by not in ("", "created_at", "modified_at"):
            raise ValueError
        return order_by, rev == "Y", int(limit), int(offset)
    except ValueError:
        raise wire.bad("invalid paging token") from None


def list_jobs(request: HttpRequest) -> HttpResponseBase:
    actor = actor_of(request)
    token = request.GET.get("next_token") or ""
    if token:
        order_by, reverse, limit, offset = _untoken(token)
    else:
        order_by = request.GET.get("order_by") or ""
        if order_by not in ("", "created_at", "modified_at"):
            raise wire.bad(f"OrderBy {order_by[:40]} not supported for listJobs")
        reverse = _bool(request.GET.get("reverse"), "reverse")
        limit, offset = _limit(request, 0), 0
    selector = wire.parse_label_selector(request.GET.get("labels") or "")
    templates = templates_readable(actor, wire.DOOR)
    namespace = request.GET.get("namespace") or ""
    if namespace and namespace != "*":
        templates = templates.filter(owner_uuid=namespace_owner(actor, namespace, write=False))
    column = "modified_at" if order_by == "modified_at" else "created_at"
    templates = templates.order_by(f"-{column}" if reverse else column, "id")[: LIST_MAX * 10]
    chosen = [
        t
        for t in templates
        if all(c.satisfied_by((t.definition or {}).get("Labels") or {}) for c in selector)
    ]
    end = offset + limit if limit else None
    page = chosen[offset:end]
    names: dict[str, str] = {}
    items = []
    for template in page[:LIST_MAX]:
        if template.owner_uuid not in names:
            names[template.owner_uuid] = namespace_name(template.owner_uuid, actor)
        items.append(records.job_json(records.load(template, actor, names[template.owner_uuid])))
    token = ""
    if end is not None and end < len(chosen):
        token = _token(order_by, reverse, limit, end)
    return JsonResponse({"Items": items, "NextToken": token})


# --- nodes, version ------------------------------------------------------------------------------


@bacalhau_view(("GET",))
def nodes(request: HttpRequest) -> HttpResponseBase:
    actor_of(request)
    live = {n.uuid for n in placement.live_nodes()}
    rows = Node.objects.filter(info__state="up").order_by("hostname", "id")[:LIST_MAX]
    items = [records.node_json(n, n.uuid in live) for n in rows if n.uuid in live]
    return JsonResponse({"Nodes": items, "nodes": items, "NextToken": ""})


@bacalhau_view(("GET",))
def node(request: HttpRequest, node_id: str) -> HttpResponseBase:
    actor_of(request)
    live = {n.uuid for n in placement.live_nodes()}
    for row in Node.objects.filter(uuid__in=live):
        if records.node_id(row.uuid) == node_id or row.uuid == node_id:
            item = records.node_json(row, True)
            return JsonResponse({"Node": item, "node": item})
    raise BacalhauError(404, f"node not found: {node_id}")


VERSION = {
    "GitVersion": "v1.4.1-crunch",
    "Major": "1",
    "Minor": "4",
    "GOOS": "linux",
    "GOARCH": "amd64",
    "GitCommit": "crunch",
    "BuildDate": "2026-12-01T00:00:00Z",
}


@bacalhau_view(("GET", "POST"))
def version(request: HttpRequest) -> HttpResponseBase:
    if request.method == "POST":
        return JsonResponse({"build_version_info": VERSION, "BuildVersionInfo": VERSION})
    return JsonResponse(VERSION)


@bacalhau_view(("GET",))
def alive(request: HttpRequest) -> HttpResponseBase:
    return JsonResponse({"Status": "OK"})
