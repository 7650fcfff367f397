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
by candidate, the first reason it was or was not reused; and each reuse is recorded
(`JobReuse`: which job, for whom, for which submission). Where the legacy form cannot
resolve what the submission names (its script_version, Quirk 7; likewise its Docker image
or SDK version), the request fails as creating the job would, instead of dropping the
constraint and reusing a job that does not satisfy it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jobs import docker, git, savings
from jobs.exceptions import InvalidRequest
from jobs.filters import apply_filters
from jobs.locks import advisory_lock
from jobs.models import Job, User
from jobs.selection import (
    CANDIDATE_ORDER,
    EXPLAIN_LIMIT,
    REUSED,
    Candidate,
    Submission,
    candidates,
    reuse_record,
    select_job,
    state_reason,
)
from jobs.selectors import restrict_readable
from jobs.services.jobs import SERVICE, parameters_digest, require_attributes
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


def _label(condition: list[Any], submitted: dict[str, Any] | None, *, legacy: bool) -> str:
    """The words `explain` uses for a job that fails a generic filter. The legacy form's
    filters come from the submission, so their labels can say what it asked for."""
    attr, op, operand = condition
    given = submitted or {}
    constraints = given.get("runtime_constraints")
    constraints = constraints if isinstance(constraints, dict) else {}
    if op == "=" and attr == "docker_image_locator" and legacy:
        if operand is None:
            return "it ran in a Docker image, and the submission names none"
        image, tag = constraints.get("docker_image"), constraints.get("docker_image_tag")
        term = f"{image}:{tag}" if tag else image
        return f"its docker_image_locator is not {operand}, the latest image for {term}"
    if op == "=" and attr in ("script_version", "arvados_sdk_version") and legacy:
        wanted = (
            given.get("script_version")
            if attr == "script_version"
            else constraints.get("arvados_sdk_version")
        )
        return f"its {attr} is not {operand}" + (
            f" ({wanted})" if isinstance(wanted, str) and wanted != operand else ""
        )
    if op == "=" and isinstance(attr, str):
        return f"its {attr} is not {json.dumps(operand)}"
    return f"it does not match the filter {json.dumps(condition)}"


def translate_filters(
    filters: list[Any],
    *,
    user: User,
    readers: list[User],
    submitted: dict[str, Any] | None,
    legacy: bool = False,
) -> Translated:
    """§3.4: rewrite `in git`/`not in git`/`in docker`/`not in docker` into generic filters.

    `submitted` is the job being created (its raw script_version ends git ranges), or None
    for list and queue (ranges end at HEAD). `legacy`: the filters are the legacy form's.
    """
    out = Translated()
    script_info: dict[str, Any] = {}
    ranges: dict[str, dict[str, Any]] = {}
    for condition in filters:
        if not (
            isinstance(condition, list) and len(condition) == 3 and isinstance(condition[1], str)
        ):
            out.add(condition, f"it does not match the filter {json.dumps(condition)}")
            continue
        attr, op, operand = condition
        op_name = op.lower()
        if op_name == "=" and attr in ("repository", "script"):
            if attr in script_info and script_info[attr] != operand:
                raise InvalidRequest(f"incompatible {attr} filters")
            script_info.setdefault(attr, operand)
            out.add(condition, _label(condition, submitted, legacy=legacy))
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
            images = f"the images {json.dumps(operand)} names ({len(hashes)} found)"
            out.add(
                [attr, generic, hashes],
                f"its {attr} is not one of {images}"
                if generic == "in"
                else f"its {attr} is one of {images}",
            )
        else:
            out.add(condition, _label(condition, submitted, legacy=legacy))

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
            f"its {attr} is not one of the {len(revs)} commits from '{minimum or ''}' to "
            f"'{maximum}' in {repository}"
            + (f", excluding {json.dumps(exclude)}" if exclude else ""),
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
        if found is None:
            # The original matched jobs without an image here (locator null); like Quirk 7,
            # fail as creating the job would, instead of reusing a job that ran no image.
            raise InvalidRequest(f"Docker image locator not found for {image}")
        locator = found.portable_data_hash
    filters.append(["docker_image_locator", "=", locator])
    sdk = constraints.get("arvados_sdk_version")
    if sdk:
        commit = git.resolve_commit(user=user, repo="arvados", ref=str(sdk))
        if commit is None:
            # The original added no SDK filter here, so any SDK version matched; fail as
            # creating the job would (the same reasoning as Quirk 7).
            raise InvalidRequest(f"Arvados sdk version {sdk} does not resolve to a commit")
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


@contextmanager
def identity_lock(*, repository: str, script: str, digest: str) -> Iterator[None]:
    """A transaction that no other find_or_create for the same (repository, script,
    parameters digest) overlaps: the second one starts its search only once the first one's
    job is committed, so it finds that job instead of creating another. The blocking lock of
    `jobs.locks`: transaction-scoped on PostgreSQL, so every API process agrees; on SQLite
    one lock of the process held around the whole transaction, commit included."""
    with advisory_lock(f"{repository}\x00{script}\x00{digest}"):
        yield


# --- Candidates ---------------------------------------------------------------------------


def search_candidates(*, user: User, digest: str, filters: list[Any]) -> list[Candidate]:
    """§3.5 as one query: the submitted parameters' digest and the filters (`candidates`
    adds the states, determinism and readability)."""
    queryset = Job.objects.filter(script_parameters_digest=digest)
    return candidates(apply_filters(queryset, Job, filters=filters), user=user)


# --- Explanations -----------------------------------------------------------------------


def explain_candidates(
    *, user: User, digest: str, translated: Translated, decisions: dict[str, str]
) -> list[dict[str, Any]]:
    """Every job with the submitted parameters (and the repository/script the filters name),
    with the first reason it was or was not reused. At most EXPLAIN_LIMIT jobs, in the
    candidates' order."""
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
    jobs = list(pool.order_by(*CANDIDATE_ORDER)[:EXPLAIN_LIMIT])
    base = Job.objects.filter(uuid__in=[j.uuid for j in jobs])

    def passing(queryset: Any) -> set[str]:
        return set(queryset.values_list("uuid", flat=True))

    readable = passing(restrict_readable(base, [user]))
    filter_steps = [
        (label, passing(apply_filters(base, Job, filters=[condition])))
        for condition, label in zip(translated.filters, translated.labels, strict=True)
    ]
    explained = []
    for job in jobs:
        if job.uuid not in readable:
            reason: str | None = "not readable by you"
        elif (reason := state_reason(job, user)) is None:
            if job.nondeterministic:
                reason = "it is marked nondeterministic: such jobs are never reused"
            else:
                reason = next((label for label, ok in filter_steps if job.uuid not in ok), None)
        decision = "rejected"
        if reason is None:
            reason = decisions.get(job.uuid, "not reached: an older job was reused first")
            decision = "reused" if reason.startswith(REUSED) else "passed over"
            if decision == "reused":
                reason = reason[len(REUSED) :].lstrip(": ")  # the decision already says it
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


def flag(value: Any, name: str) -> bool:
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
    require_attributes(attrs)
    attrs = dict(attrs)
    if "minimum_script_version" in attrs:
        minimum_script_version = attrs.pop("minimum_script_version")
    if "exclude_script_versions" in attrs:
        exclude_script_versions = attrs.pop("exclude_script_versions")
    if "no_reuse" in attrs:
        find_or_create = not flag(attrs.pop("no_reuse"), "no_reuse")
    if minimum_script_version is not None and not isinstance(minimum_script_version, str):
        raise InvalidRequest("minimum_script_version must be a string")
    if exclude_script_versions is not None:
        exclude_script_versions = _strings(exclude_script_versions, "exclude_script_versions")
    if not find_or_create:
        return Submission.without_reuse(SERVICE.create(actor=actor, attrs=attrs), explain=explain)

    user = actor.user
    digest = parameters_digest(attrs.get("script_parameters"))
    if filters:
        translated = translate_filters(
            filters, user=user, readers=readers or [user], submitted=attrs
        )
    else:
        translated = translate_filters(
            legacy_filters(
                attrs, user=user, minimum=minimum_script_version, exclude=exclude_script_versions
            ),
            user=user,
            readers=[user],
            submitted=attrs,
            legacy=True,
        )
    _require_identity_filters(translated.filters)
    # A git range can list thousands of commits. The identity index already narrows the
    # candidates to a few rows, so those lists are checked in Python, not sent as a huge IN.
    in_sql: list[Any] = []
    in_python: list[tuple[str, set[Any]]] = []
    for f in translated.filters:
        if (
            isinstance(f, list)
            and len(f) == 3
            and f[1] == "in"
            and f[0] in ("script_version", "arvados_sdk_version")
            and isinstance(f[2], list)
        ):
            in_python.append((f[0], set(f[2])))
        else:
            in_sql.append(f)

    def search() -> list[Candidate]:
        found = search_candidates(user=user, digest=digest, filters=in_sql)
        return [j for j in found if all(getattr(j, a) in v for a, v in in_python)]

    def record(chosen: Job) -> None:
        reuse_record(
            job=chosen,
            actor=actor,
            attrs=attrs,
            filters=filters,
            door="arvados",
            project_uuid=attrs.get("owner_uuid"),
        )

    # A hit is a read and needs no lock. Only a miss takes the identity lock, then searches
    # again (an identical submission may have created the job meanwhile) before creating.
    if not explain and not log.isEnabledFor(logging.DEBUG):
        chosen, _ = select_job(search(), user=user)
        if chosen is not None:
            record(chosen)
            return Submission(chosen, True, None)
    with identity_lock(
        repository=str(attrs.get("repository")), script=str(attrs.get("script")), digest=digest
    ):
        chosen, decisions = select_job(search(), user=user)
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
            record(chosen)
            return Submission(chosen, True, explanation if explain else None)
        job = SERVICE.create(actor=actor, attrs=attrs)
        savings.record_miss(job=job, user_uuid=user.uuid)
        if explanation is not None:
            explanation["created"] = job.uuid
        return Submission(job, False, explanation if explain else None)
