"""Shared test set-up.

Tests run on PostgreSQL and Redis when DATABASE_URL / REDIS_URL are set (as in CI), otherwise
on SQLite; tests that truly need a server are marked and skipped with the reason shown. With
CRUNCH_REQUIRE_SERVICES=1 (CI) a missing server fails the run instead of skipping.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_SERVICES = os.environ.get("CRUNCH_REQUIRE_SERVICES") == "1"


def _redis_reachable() -> str | None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return "REDIS_URL is not set"
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis at {url} is unreachable: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from django.conf import settings

    no_pg = None if settings.CRUNCH_DB_IS_POSTGRES else "DATABASE_URL does not name PostgreSQL"
    no_redis = _redis_reachable()
    if REQUIRE_SERVICES and (no_pg or no_redis):
        raise pytest.UsageError(f"CI needs real services: {no_pg or no_redis}")
    for item in items:
        if no_pg and "postgres" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"needs PostgreSQL: {no_pg}"))
        if no_redis and "redis" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"needs Redis: {no_redis}"))


@pytest.fixture
def data_dir(settings: Any) -> Path:
    return Path(settings.CRUNCH_DATA_DIR)


class ApiClient:
    """Calls /arvados/v1 like a client: JSON bodies, a token header, parsed JSON answers."""

    def __init__(self, client: Any, token: str | None = None) -> None:
        self.client = client
        self.token = token

    def _headers(self, token: str | None) -> dict[str, str]:
        token = token if token is not None else self.token
        return {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    def _params(self, params: dict[str, Any] | None) -> dict[str, str]:
        return {
            k: (json.dumps(v) if isinstance(v, list | dict | bool) or v is None else str(v))
            for k, v in (params or {}).items()
        }

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        token: str | None = None,
        **extra: Any,
    ) -> tuple[int, Any]:
        url = path if path.startswith("/") else f"/arvados/v1/{path}"
        headers = self._headers(token) | extra
        fn = getattr(self.client, method.lower())
        if body is not None:
            query = self._params(params)
            if query:
                from urllib.parse import urlencode

                url = f"{url}?{urlencode(query)}"
            response = fn(url, data=json.dumps(body), content_type="application/json", **headers)
        elif method.upper() in ("GET", "DELETE") or params is None:
            response = (
                fn(url, self._params(params) if method.upper() == "GET" else None, **headers)
                if method.upper() == "GET"
                else fn(url, **headers)
            )
        else:
            response = fn(url, self._params(params), **headers)
        try:
            data = json.loads(response.content) if response.content else None
        except ValueError:
            data = response.content
        return response.status_code, data

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.call("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.call("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.call("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.call("DELETE", path, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        status, data = self.call(method, path, **kw)
        assert status == 200, (status, data)
        return data


@pytest.fixture
def make_user(db: Any) -> Callable[..., tuple[Any, str]]:
    """make_user("bob", admin=False, active=True) -> (user, token)."""
    from jobs.services.tokens import token_create, user_get_or_create

    def make(
        username: str, *, admin: bool = False, active: bool = True, scopes: list[str] | None = None
    ) -> tuple[Any, str]:
        user = user_get_or_create(username=username, admin=admin)
        if not active:
            user.is_active = False
            user.save()
        token = token_create(user=user, scopes=scopes).api_token
        assert token
        return user, token

    return make


@pytest.fixture
def api(client: Any) -> ApiClient:
    return ApiClient(client)


@pytest.fixture
def admin(make_user: Callable[..., tuple[Any, str]]) -> tuple[Any, str]:
    return make_user("admin", admin=True)


@pytest.fixture
def active(make_user: Callable[..., tuple[Any, str]]) -> tuple[Any, str]:
    return make_user("active")


@pytest.fixture
def spectator(make_user: Callable[..., tuple[Any, str]]) -> tuple[Any, str]:
    return make_user("spectator")


@pytest.fixture(autouse=True)
def _isolated_repositories(settings: Any, tmp_path: Path) -> Iterator[None]:
    settings.CRUNCH_GIT_DIR = tmp_path / "git"
    yield


@pytest.fixture(autouse=True)
def _isolated_keep(settings: Any, tmp_path: Path) -> Iterator[None]:
    """Each test has a content store of its own (so dedupe and corruption tests see only
    their own blocks)."""
    settings.CRUNCH_KEEP_DIR = tmp_path / "keep"
    yield


@pytest.fixture(scope="session")
def crunch_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real `crunch serve` over TLS with users admin, alice and bob (tests/keep_server.py)."""
    from tests.keep_server import running_crunch

    with running_crunch(tmp_path_factory.mktemp("crunch-serve")) as server:
        yield server
