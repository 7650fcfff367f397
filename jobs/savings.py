"""What reuse saved: each submission that asks for reuse is a hit or a miss, counted per day,
user, project, door and (for a miss) its reason, with the compute each hit avoided.

A hit avoided the reused job's run time times the cores it asked for (`core_seconds`); a job
still queued or running when it is handed back counts 0, since what it will take is not yet
known. A miss's reason is the most telling fact about the earlier jobs with the same identity
(`miss_reason`), one short phrase from a fixed set, so that reasons can be counted.

Tallies are upserted (one statement per submission), so the summary reads one row per day,
user, project, door and reason, whatever the number of jobs.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.db import connection, models
from django.db.models import Sum
from django.db.models.functions import TruncMonth, TruncWeek
from django.utils import timezone

from jobs import rowsql
from jobs.exceptions import InvalidRequest
from jobs.models import Job, JobState, ReuseTally, User
from jobs.placement import Requirements

NO_EARLIER = "no earlier job with the same inputs"
INVALIDATED = "the earlier job's output was marked bad"
NONDETERMINISTIC = "earlier jobs are marked nondeterministic"
NOT_USABLE = "earlier completed jobs disagree on the output or are not readable"
OTHERS_ACTIVE = "an identical job is queued or running for another user"
FAILED = "earlier identical jobs failed or were cancelled"

GROUPINGS = ("user", "project", "door", "day", "week", "month")
_COLUMN = {"user": "user_uuid", "project": "project_uuid", "door": "door", "day": "day"}
_SINCE = re.compile(r"^(\d{1,6})([hdw])\Z")


def cores(runtime_constraints: Any) -> float:
    """The cores a job asked for (1 when it did not say)."""
    try:
        return Requirements.of(runtime_constraints).cpus or 1.0
    except InvalidRequest:
        return 1.0


def core_seconds(job: Job) -> float:
    """The compute a completed job took: its run time times the cores it asked for."""
    if job.state != JobState.COMPLETE or job.started_at is None or job.finished_at is None:
        return 0.0
    seconds = max((job.finished_at - job.started_at).total_seconds(), 0.0)
    return seconds * cores(job.runtime_constraints)


def miss_reason(job: Job) -> str:
    """Why a submission that asked for reuse created `job`, judged from the earlier jobs
    with the same identity."""
    others = list(
        Job.objects.filter(reuse_key=job.reuse_key)
        .exclude(uuid=job.uuid)
        .values_list("state", "invalidated_at", "nondeterministic")[:50]
    )
    if not job.reuse_key or not others:
        return NO_EARLIER
    if any(invalidated is not None for _, invalidated, _ in others):
        return INVALIDATED
    if all(nondeterministic for _, _, nondeterministic in others):
        return NONDETERMINISTIC
    states = {state for state, _, _ in others}
    if JobState.COMPLETE in states:
        return NOT_USABLE
    if states & {JobState.QUEUED, JobState.RUNNING}:
        return OTHERS_ACTIVE
    return FAILED


def tally(
    *,
    user_uuid: str,
    project_uuid: str,
    door: str,
    hit: bool,
    reason: str = "",
    saved: float = 0.0,
    record: models.Model | None = None,
) -> None:
    """Count one submission (one statement, safe under concurrency). With `record`, a new
    row to insert with it (a hit's `JobReuse`), in the same statement on PostgreSQL."""
    table = ReuseTally._meta.db_table
    sql = (
        f"INSERT INTO {table} "  # the table name is ours, never user text
        "(day, user_uuid, project_uuid, door, hit, reason, count, saved_core_seconds) "
        "VALUES (%s, %s, %s, %s, %s, %s, 1, %s) "
        "ON CONFLICT (day, user_uuid, project_uuid, door, hit, reason) DO UPDATE SET "
        f"count = {table}.count + 1, "
        f"saved_core_seconds = {table}.saved_core_seconds + excluded.saved_core_seconds"
    )
    params: list[Any] = [
        timezone.now().date(),
        user_uuid,
        project_uuid,
        door,
        hit,
        reason[:255],
        saved,
    ]
    with connection.cursor() as cursor:
        if record is not None:
            insert_sql, insert_params = rowsql.reader(type(record)).insert(record)
            if connection.vendor == "postgresql":
                sql, params = f"WITH recorded AS ({insert_sql}) {sql}", [*insert_params, *params]
            else:
                cursor.execute(insert_sql, insert_params)
        cursor.execute(sql, params)


def record_miss(*, job: Job, user_uuid: str) -> None:
    tally(
        user_uuid=user_uuid,
        project_uuid=job.owner_uuid or user_uuid,
        door=job.door,
        hit=False,
        reason=miss_reason(job),
    )


def parse_since(value: Any, *, now: dt.datetime | None = None) -> dt.date | None:
    """`7d`, `24h`, `2w` before now, or an ISO date; None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest("since must be a duration such as 7d, 24h or 2w, or a date")
    now = now or timezone.now()
    match = _SINCE.match(value.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        delta = {"h": dt.timedelta(hours=amount), "d": dt.timedelta(days=amount)}.get(
            unit, dt.timedelta(weeks=amount)
        )
        return (now - delta).date()
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise InvalidRequest(
            f"since must be a duration such as 7d, 24h or 2w, or a date, not {value!r}"
        ) from None


def summary(
    *,
    user: User,
    by: str | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> dict[str, Any]:
    """Hits, misses, core-hours saved and the most common miss reason, overall and per
    `by` group. An admin sees every user's submissions; anyone else their own."""
    if by is not None and by not in GROUPINGS:
        raise InvalidRequest(f"by must be one of {', '.join(GROUPINGS)}, not {by!r}")
    rows = ReuseTally.objects.all()
    if not user.is_admin:
        rows = rows.filter(user_uuid=user.uuid)
    if since is not None:
        rows = rows.filter(day__gte=since)
    if until is not None:
        rows = rows.filter(day__lt=until)
    result: dict[str, Any] = {
        "kind": "arvados#reuseSummary",
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        **_totals(
            rows.values("hit", "reason").annotate(n=Sum("count"), s=Sum("saved_core_seconds"))
        ),
        "by": by,
        "groups": [],
    }
    if by is not None:
        if by in ("week", "month"):
            rows = rows.annotate(group=(TruncWeek if by == "week" else TruncMonth)("day"))
            column = "group"
        else:
            column = _COLUMN[by]
        grouped: dict[Any, list[dict[str, Any]]] = {}
        for row in rows.values(column, "hit", "reason").annotate(
            n=Sum("count"), s=Sum("saved_core_seconds")
        ):
            grouped.setdefault(row[column], []).append(row)
        result["groups"] = [
            {"key": _key(key), **_totals(items)}
            for key, items in sorted(grouped.items(), key=lambda kv: str(kv[0]))
        ]
    return result


def _key(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _totals(rows: Any) -> dict[str, Any]:
    hits = misses = 0
    saved = 0.0
    reasons: dict[str, int] = {}
    for row in rows:
        if row["hit"]:
            hits += row["n"] or 0
            saved += row["s"] or 0.0
        else:
            misses += row["n"] or 0
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + (row["n"] or 0)
    top = max(reasons.items(), key=lambda kv: (kv[1], kv[0]), default=None)
    return {
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "core_hours_saved": round(saved / 3600.0, 6),
        "top_miss_reason": {"reason": top[0], "count": top[1]} if top else None,
    }
