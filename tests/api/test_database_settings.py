"""How the database is reached: PostgreSQL binds parameters on the server and prepares the
statements a connection runs often (`CRUNCH_DB_PREPARE_THRESHOLD`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parents[2]

SHOW_OPTIONS = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps(settings.DATABASES['default'].get('OPTIONS', {}), default=str))"
)


def database_options(database_url: str, threshold: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRUNCH_DB_")}
    env |= {"DJANGO_SETTINGS_MODULE": "api.settings", "DATABASE_URL": database_url}
    if threshold is not None:
        env["CRUNCH_DB_PREPARE_THRESHOLD"] = threshold
    return subprocess.run(
        [sys.executable, "-c", SHOW_OPTIONS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# Settings only parse the URL: nothing listens on port 1.
UNUSED_POSTGRES = "postgres://crunch@127.0.0.1:1/crunch"


@pytest.mark.parametrize(
    ("threshold", "expected"), [(None, 5), ("", 5), ("1", 1), ("12", 12), ("0", None)]
)
def test_postgresql_binds_on_the_server_and_prepares_after_the_threshold(
    threshold: str | None, expected: int | None
) -> None:
    result = database_options(UNUSED_POSTGRES, threshold)
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout.strip().splitlines()[-1])
    assert options["server_side_binding"] is True
    assert options["prepare_threshold"] == expected


@pytest.mark.parametrize("threshold", ["-1", "five"])
def test_a_bad_prepare_threshold_is_refused_by_name(threshold: str) -> None:
    result = database_options(UNUSED_POSTGRES, threshold)
    assert result.returncode != 0
    assert "CRUNCH_DB_PREPARE_THRESHOLD" in result.stderr
    assert threshold in result.stderr


def test_sqlite_is_left_as_it_was(tmp_path: Path) -> None:
    result = database_options(f"sqlite:///{tmp_path / 'db.sqlite3'}", "3")
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout.strip().splitlines()[-1])
    assert "server_side_binding" not in options and "prepare_threshold" not in options


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_statement_run_often_is_prepared_on_its_connection() -> None:
    threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]
    assert threshold is not None and threshold >= 1
    statement = "SELECT %s::text || 'crunch-prepared-statement-check'"
    with connection.cursor() as cursor:
        for n in range(threshold + 1):
            cursor.execute(statement, [str(n)])
            assert cursor.fetchone() == (f"{n}crunch-prepared-statement-check",)
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%crunch-prepared-statement-check%"],
        )
        prepared = [row[0] for row in cursor.fetchall()]
    # The parameter went to the server as $1: the text was not spliced into the statement.
    assert any("$1" in text and "SELECT %s" not in text for text in prepared), prepared
