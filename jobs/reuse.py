"""find_or_create: reuse an earlier job with the same inputs instead of running it again.

Spec §3. The request's filters (or, without filters, the "legacy form" built from the
submitted job) are translated (`in git` → commit lists, `in docker` → image hashes), then:

- candidates: jobs readable by the caller, with the submitted parameters' digest, Complete
  or the caller's own Queued/Running, not nondeterministic, matching every filter, ordered
  Running, Queued, then Complete oldest first. One indexed query.
- selection: the oldest fully readable Complete job, as long as every Complete candidate
  with an output and a log agrees on the output; else the caller's own Running, then
  Queued job; else a new job.

Beyond the original: identical concurrent submissions are serialised on a lock keyed by
(repository, script, parameters digest), so they get one job; and `explain` says, candidate
by candidate, the first reason it was or was not reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from jobs import docker, git
from jobs.exceptions import InvalidRequest
from jobs.filters import apply_filters
from jobs.models import Job, JobState, User
from jobs.selectors import pdh_readable, restrict_readable
from jobs.services.jobs import REQUIRED_ATTRIBUTES, SERVICE, parameters_digest
from jobs.services.objects import Actor

log = logging.getLogger("crunch.reuse")

GIT_OPERATORS = ("in git", "not in git")
DOCKER_OPERATORS = ("in docker", "not in docker")


@dataclass
class Translated:
    """Generic filters, each with the words `explain` uses when a job fails it."""

    filters: list[Any] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def add(self, condition: Any, label: str) -> None:
        self.filters.append(condition)
        self.labels.append(label)


def _strings(value: Any, what: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise InvalidRequest(
            f"Invalid operand for '{what}' operator in filters: a string or an array of strings"
        )
    return items


def translate_filters(
    filters: list[Any], *, user: User, readers: list[User], submitted: dict[str, Any] | None
) -> Translated:
    """§3.4: rewrite `in git`/`not in git`/`in docker`/`not in docker` into generic filters.

    `submitted` is the job being created (its raw script_version ends git ranges), or None
    for list and queue (ranges end at HEAD).
    """
    out = Translated()
    script_info: dict[str, Any] = {}
    ranges: dict[str, dict[str, Any]] = {}
    for condition in filters:
        if not (
            isinstance(condition, list) and len(condition) == 3 and isinstance(condition[1], str)
        ):
            out.add(condition, f"does not match filter {json.dumps(condition)}")
            continue
        attr, op, operand = condition
        op_name = op.lower()
        if op_name == "=" and attr in ("repository", "script"):
            if attr in script_info and script_info[attr] != operand:
                raise InvalidRequest(f"incompatible {attr} filters")
            script_info.setdefault(attr, operand)
            out.add(condition, f"its {attr} is not {json.dumps(operand)}")
        elif op_name in GIT_OPERATORS:
            if not isinstance(attr, str):
                raise InvalidRequest(f"unknown attribute for git filter: {json.dumps(attr)}")
            current = ranges.setdefault(attr, {"min": None, "exclude": []})
            if op_name == "in git":
                if not isinstance(operand, str):
                    raise InvalidRequest(
                        "Invalid operand for 'in git' operator in filters: a single string"
                    )
                current["min"] = operand
            else:
                current["exclude"] += _strings(operand, "not in git")
        elif op_name in DOCKER_OPERATORS:
            hashes: list[str] = []
            for term in _strings(operand, op_name):
                search, _, tag = term.partition(":")
                for image in docker.find_all_docker_images(
                    search=search, tag=tag or None, readers=readers, compatible_only=False
                ):
                    if image.portable_data_hash not in hashes:
                        hashes.append(image.portable_data_hash)
            generic = "in" if op_name == "in docker" else "not in"
            out.add(
                [attr, generic, hashes],
                f"its {attr} is {'not ' if generic == 'in' else ''}one of the images "
                f"{json.dumps(operand)} names",
            )
        else:
            out.add(condition, f"does not match filter {json.dumps(condition)}")

    for attr, git_range in ranges.items():
        if attr == "script_version":
            if "repository" not in script_info:
                raise InvalidRequest("script_version filter needs repository filter")
            if "script" not in script_info:
                raise InvalidRequest("script_version filter needs script filter")
            repository = script_info["repository"]
            maximum = submitted.get("script_version") if submitted else "HEAD"
        elif attr == "arvados_sdk_version":
            repository, maximum = "arvados", "HEAD"
        else:
            raise InvalidRequest(f"unknown attribute for git filter: {attr}")
        if not isinstance(repository, str):
            raise InvalidRequest("repository filter must be a string")
        minimum, exclude = git_range["min"], git_range["exclude"]
        revs = git.find_commit_range(
            user=user,
            repo=repository,
            min=minimum,
            max=maximum if isinstance(maximum, str) else None,
            exclude=exclude,
        )
        if not revs:
            raise InvalidRequest(
                f"error searching {repository} from '{minimum or ''}' to '{maximum}', "
                f"excluding {json.dumps(exclude)}"
            )
        out.add(
            [attr, "in", revs],
            f"its {attr} is outside the commits from '{minimum or ''}' to '{maximum}' "
            f"in {repository}" + (f", excluding {json.dumps(exclude)}" if exclude else ""),
        )
    return out


def legacy_filters(
    submitted: dict[str, Any],
    *,
    user: User,
    minimum: str | None,
    exclude: list[str] | None,
) -> list[Any]:
    """§3.2: the filters implied by the submitted job when the request gives none."""
    filters: list[Any] = []
    repository, script = submitted.get("repository"), submitted.get("script")
    if repository:
        filters.append(["repository", "=", repository])
    if script:
        filters.append(["script", "=", script])
    if exclude:
        filters.append(["script_version", "not in git", exclude])
    if minimum and minimum.strip():
        filters.append(["script_version", "in git", minimum])
    else:
        version = submitted.get("script_version")
        commit = (
            git.resolve_commit(user=user, repo=repository, ref=version)
            if isinstance(repository, str) and isinstance(version, str)
            else None
        )
        if commit is None:
            # Quirk 7 resolved: the original dropped the version filter here.
            raise InvalidRequest(f"Script version {version} does not resolve to a commit")
        filters.append(["script_version", "=", commit])
    constraints = submitted.get("runtime_constraints") or {}
    if not isinstance(constraints, dict):
        constraints = {}
    image = constraints.get("docker_image")
    locator = None
    if image:
        tag = constraints.get("docker_image_tag")
        term = f"{image}:{tag}" if tag else image
        found = docker.find_latest_docker_image(search=str(term), tag=None, readers=[user])
        locator = found.portable_data_hash if found else None
    filters.append(["docker_image_locator", "=", locator])
    sdk = constraints.get("arvados_sdk_version")
    if sdk:
        commit = git.resolve_commit(user=user, repo="arvados", ref=str(sdk))
        if commit:
            filters.append(["arvados_sdk_version", "=", commit])
    return filters


def _require_identity_filters(filters: list[Any]) -> None:
    """§3.3: reuse needs a repository and a script filter (any operator)."""
    attributes = {f[0] for f in filters if isinstance(f, list) and f and isinstance(f[0], str)}
    if "repository" not in attributes:
        raise InvalidRequest("repository filter required")
    if "script" not in attributes:
        raise InvalidRequest("script filter required")


# --- The identity lock ------------------------------------------------------------------

_LOCAL_LOCK = threading.Lock()


@contextmanager
def identity_lock(*, repository: str, script: str, digest: str) -> Iterator[None]:
    """Serialise find_or_create for one (repository, script, parameters digest).

    PostgreSQL: a transaction-scoped advisory lock (call inside `transaction.atomic`), so
    every API process agrees. SQLite: a process-wide lock (writes are serialised there
    anyway; the embedded default runs one API process).
    """
    key = f"{repository}\x00{script}\x00{digest}".encode()
    if connection.vendor == "postgresql":
        number = int.from_bytes(hashlib.sha256(key).digest()[:8], "big", signed=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [number])
        yield
    else:
        with _LOCAL_LOCK:
            yield


# --- Candidates and the selection loop --------------------------------------------------


def candidates_queryset(*, user: User, digest: str, filters: list[Any]) -> Any:
    """§3.5 as one query: readable, reusable state, digest, deterministic, the filters."""
    queryset = Job.objects.filter(script_parameters_digest=digest)
    queryset = queryset.filter(
        Q(state=JobState.COMPLETE)
        | Q(owner_uuid=user.uuid, state__in=[JobState.QUEUED, JobState.RUNNING])
    ).exclude(nondeterministic=True)
    queryset = apply_filters(queryset, Job, filters=filters)
    return restrict_readable(queryset, [user])


REFUSED = object()


def select(jobs: list[Job], *, user: User) -> tuple[Job | None, dict[str, str]]:
    """§3.6 / §3.7 over candidates in order; returns the choice and a reason per job."""
    reasons: dict[str, str] = {}
    incomplete: Job | None = None
    chosen: Any = None
    chosen_output: str | None = None
    differ_ok = settings.CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER
    for job in jobs:
        if job.state != JobState.COMPLETE:
            if incomplete is None:
                incomplete = job
                reasons[job.uuid] = f"your own {job.state} job: reusable if no completed job is"
            else:
                reasons[job.uuid] = f"your own {job.state} job, but an earlier one comes first"
            continue
        if chosen is REFUSED and not differ_ok:
            reasons[job.uuid] = "not considered: completed candidates disagree on the output"
            continue
        if job.output is None:
            reasons[job.uuid] = "completed without an output"
            continue
        if job.log is None:
            reasons[job.uuid] = "completed without a log"
            continue
        if differ_ok:
            if not pdh_readable(user, job.output):
                reasons[job.uuid] = f"its output {job.output} is not readable by you"
            elif not pdh_readable(user, job.log):
                reasons[job.uuid] = f"its log {job.log} is not readable by you"
            else:
                reasons[job.uuid] = "reused: the oldest completed job with a readable output"
                return job, reasons
            continue
        if chosen_output is not None:
            if job.output != chosen_output:
                chosen = REFUSED
                reasons[job.uuid] = (
                    f"its output {job.output} disagrees with {chosen_output}: "
                    "no completed job is reused"
                )
            else:
                reasons[job.uuid] = "same output as the earlier completed job"
            continue
        if not pdh_readable(user, job.output):
            chosen = REFUSED
            reasons[job.uuid] = (
                f"its output {job.output} is not readable by you: no completed job is reused"
            )
            continue
        chosen_output = job.output
        if not pdh_readable(user, job.log):
            reasons[job.uuid] = f"its log {job.log} is not readable by you"
            continue
        chosen = job
        reasons[job.uuid] = "reused: the oldest completed job with readable output and log"
    if isinstance(chosen, Job):
        result: Job | None = chosen
    else:
        result = incomplete
    if result is not None and result.state != JobState.COMPLETE:
        reasons[result.uuid] = f"reused: your own {result.state} job"
        if chosen is REFUSED:
            reasons[result.uuid] += " (completed candidates were refused)"
    return result, reasons


# --- Explanations -----------------------------------------------------------------------

EXPLAIN_LIMIT = 50


def explain_candidates(
    *, user: User, digest: str, translated: Translated, decisions: dict[str, str]
) -> list[dict[str, Any]]:
    """Every job with the submitted parameters (and the repository/script the filters name),
    with the first reason it was or was not reused. At most EXPLAIN_LIMIT jobs."""
    pool = Job.objects.filter(script_parameters_digest=digest)
    for condition in translated.filters:
        if (
            isinstance(condition, list)
            and len(condition) == 3
            and condition[1] == "="
            and condition[0] in ("repository", "script")
            and isinstance(condition[2], str)
        ):
            pool = pool.filter(**{condition[0]: condition[2]})
    jobs = list(pool.order_by("-state", "created_at")[:EXPLAIN_LIMIT])
    uuids = [j.uuid for j in jobs]
    base = Job.objects.filter(uuid__in=uuids)

    def passing(queryset: Any) -> set[str]:
        return set(queryset.values_list("uuid", flat=True))

    steps: list[tuple[str, set[str]]] = [
        ("not readable by you", passing(restrict_readable(base, [user]))),
        (
            "its state is not reusable: only Complete jobs, or your own Queued or Running ones",
            passing(
                base.filter(
                    Q(state=JobState.COMPLETE)
                    | Q(owner_uuid=user.uuid, state__in=[JobState.QUEUED, JobState.RUNNING])
                )
            ),
        ),
        ("it is marked nondeterministic", passing(base.exclude(nondeterministic=True))),
    ]
    for condition, label in zip(translated.filters, translated.labels, strict=True):
        steps.append((label, passing(apply_filters(base, Job, filters=[condition]))))
    explained = []
    for job in jobs:
        reason = next((label for label, ok in steps if job.uuid not in ok), None)
        decision = "rejected"
        if reason is None:
            reason = decisions.get(job.uuid, "not reached")
            decision = "reused" if reason.startswith("reused") else "passed over"
        explained.append(
            {
                "uuid": job.uuid,
                "state": job.state,
                "script_version": job.script_version,
                "output": job.output,
                "decision": decision,
                "reason": reason,
            }
        )
    return explained


# --- The entry point --------------------------------------------------------------------


@dataclass
class Submission:
    job: Job
    reused: bool
    explanation: dict[str, Any] | None = None


def _flag(value: Any, name: str) -> bool:
    """A boolean inside the job object (`no_reuse`), parsed like declared booleans (§1.7
    recommendation: "false" means false)."""
    if value is None or value is False or value in (0, "0", "false"):
        return False
    if value is True or value in (1, "1", "true"):
        return True
    raise InvalidRequest(f"{name} must be a boolean, true or false")


def job_submit(
    *,
    actor: Actor,
    attrs: dict[str, Any],
    find_or_create: bool = False,
    filters: list[Any] | None = None,
    minimum_script_version: str | None = None,
    exclude_script_versions: list[str] | None = None,
    readers: list[User] | None = None,
    explain: bool = False,
) -> Submission:
    """Create a job, or with `find_or_create` hand back an equivalent earlier one (§3.1)."""
    for name in REQUIRED_ATTRIBUTES:
        if attrs.get(name) is None:
            raise InvalidRequest(f"{name} attribute must be specified")
    attrs = dict(attrs)
    if "minimum_script_version" in attrs:
        minimum_script_version = attrs.pop("minimum_script_version")
    if "exclude_script_versions" in attrs:
        exclude_script_versions = attrs.pop("exclude_script_versions")
    if "no_reuse" in attrs:
        find_or_create = not _flag(attrs.pop("no_reuse"), "no_reuse")
    if minimum_script_version is not None and not isinstance(minimum_script_version, str):
        raise InvalidRequest("minimum_script_version must be a string")
    if exclude_script_versions is not None:
        exclude_script_versions = _strings(exclude_script_versions, "exclude_script_versions")
    if not find_or_create:
        job = SERVICE.create(actor=actor, attrs=attrs)
        return Submission(
            job,
            False,
            {"reused": False, "reason": "find_or_create not requested"} if explain else None,
        )

    user = actor.user
    digest = parameters_digest(attrs.get("script_parameters"))
    with (
        transaction.atomic(),
        identity_lock(
            repository=str(attrs.get("repository")), script=str(attrs.get("script")), digest=digest
        ),
    ):
        if filters:
            translated = translate_filters(
                filters, user=user, readers=readers or [user], submitted=attrs
            )
        else:
            translated = translate_filters(
                legacy_filters(
                    attrs,
                    user=user,
                    minimum=minimum_script_version,
                    exclude=exclude_script_versions,
                ),
                user=user,
                readers=[user],
                submitted=attrs,
            )
        _require_identity_filters(translated.filters)
        candidates = list(
            candidates_queryset(user=user, digest=digest, filters=translated.filters).order_by(
                "-state", "created_at"
            )
        )
        chosen, decisions = select(candidates, user=user)
        explanation = None
        if explain or log.isEnabledFor(logging.DEBUG):
            explanation = {
                "reused": chosen is not None,
                "filters": translated.filters,
                "candidates": explain_candidates(
                    user=user, digest=digest, translated=translated, decisions=decisions
                ),
            }
            log.debug(
                "find_or_create %s/%s: %s",
                attrs.get("repository"),
                attrs.get("script"),
                json.dumps(explanation, default=str),
            )
        if chosen is not None:
            return Submission(chosen, True, explanation if explain else None)
        job = SERVICE.create(actor=actor, attrs=attrs)
        if explanation is not None:
            explanation["created"] = job.uuid
        return Submission(job, False, explanation if explain else None)
