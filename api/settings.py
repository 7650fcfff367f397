"""Django settings for Crunch, all read from the environment (see README, "Configuration")."""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from api.env import (
    env_bool,
    env_command,
    env_int,
    env_labels,
    env_list,
    env_redis_url,
    env_resources,
    env_str,
    env_uuid_prefix,
    env_words,
)

BASE_DIR = Path(__file__).resolve().parent.parent

CRUNCH_DATA_DIR = Path(env_str("CRUNCH_DATA_DIR", str(BASE_DIR / "var"))).resolve()
CRUNCH_UUID_PREFIX = env_uuid_prefix("CRUNCH_UUID_PREFIX", "zzzzz")
CRUNCH_GIT_DIR = CRUNCH_DATA_DIR / "git"
CRUNCH_MAX_ITEMS_PER_RESPONSE = env_int("CRUNCH_MAX_ITEMS_PER_RESPONSE", 1000, minimum=1)
# Where the public API is reachable, for URLs handed to clients (clone URLs, discovery rootUrl).
# Empty: derived from each request's Host header.
CRUNCH_EXTERNAL_URL = env_str("CRUNCH_EXTERNAL_URL").rstrip("/")
# Methods turned off, e.g. "jobs.create" (spec: disable_api_methods).
CRUNCH_DISABLE_API_METHODS = frozenset(env_list("CRUNCH_DISABLE_API_METHODS", []))
# How often a token's last_used_at is rewritten, at most (seconds): a write per request
# would make every read a write.
CRUNCH_TOKEN_TOUCH_SECONDS = env_int("CRUNCH_TOKEN_TOUCH_SECONDS", 60, minimum=0)
CRUNCH_GIT_TIMEOUT = env_int("CRUNCH_GIT_TIMEOUT", 120, minimum=1)
# Docker image archive formats jobs may use (spec §6.3): v1 `<id>.tar`, v2 `sha256:<id>.tar`.
CRUNCH_DOCKER_IMAGE_FORMATS = env_list("CRUNCH_DOCKER_IMAGE_FORMATS", ["v1", "v2"])
if not CRUNCH_DOCKER_IMAGE_FORMATS or set(CRUNCH_DOCKER_IMAGE_FORMATS) - {"v1", "v2"}:
    raise ImproperlyConfigured("CRUNCH_DOCKER_IMAGE_FORMATS must be v1, v2 or v1,v2")
# An image for jobs that name none (spec §2.4 default_docker_image_for_jobs); empty: none.
CRUNCH_DEFAULT_DOCKER_IMAGE_FOR_JOBS = env_str("CRUNCH_DEFAULT_DOCKER_IMAGE_FOR_JOBS")
# Reuse the oldest readable completed job even when completed candidates' outputs differ
# (spec §3.7).
CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER = env_bool("CRUNCH_REUSE_JOB_IF_OUTPUTS_DIFFER", False)
# `GET /metrics` (Prometheus) without a token; otherwise an admin token is needed.
CRUNCH_METRICS_PUBLIC = env_bool("CRUNCH_METRICS_PUBLIC", False)
# Inputs a job names by URL (the Bacalhau-style door's urlDownload) are fetched by the API
# server; by default only from public addresses, so a job cannot read the server's own
# network (loopback, private, link-local ranges).
CRUNCH_URL_INPUTS_PRIVATE = env_bool("CRUNCH_URL_INPUTS_PRIVATE", False)
# Every process (API servers, workers) records its metrics in files here, which a scrape adds
# up (prometheus_client's multiprocess mode). Set before prometheus_client is first imported.
PROMETHEUS_MULTIPROC_DIR = Path(
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(CRUNCH_DATA_DIR / "metrics"))
)
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)

# The content store (README, "Storing data"): blocks in CRUNCH_DATA_DIR/keep, or in an
# S3-compatible bucket shared by several machines (credentials: the usual AWS_* variables).
CRUNCH_KEEP_DIR = CRUNCH_DATA_DIR / "keep"
CRUNCH_KEEP_BACKEND = env_str("CRUNCH_KEEP_BACKEND", "filesystem")
if CRUNCH_KEEP_BACKEND not in ("filesystem", "s3"):
    raise ImproperlyConfigured(
        f"CRUNCH_KEEP_BACKEND must be filesystem or s3, not {CRUNCH_KEEP_BACKEND!r}"
    )
CRUNCH_KEEP_S3_BUCKET = env_str("CRUNCH_KEEP_S3_BUCKET")
CRUNCH_KEEP_S3_ENDPOINT = env_str("CRUNCH_KEEP_S3_ENDPOINT").rstrip("/")
CRUNCH_KEEP_S3_REGION = env_str("CRUNCH_KEEP_S3_REGION")
if CRUNCH_KEEP_BACKEND == "s3" and not re.match(r"^[A-Za-z0-9._-]{3,63}\Z", CRUNCH_KEEP_S3_BUCKET):
    raise ImproperlyConfigured(
        f"CRUNCH_KEEP_S3_BUCKET must name a bucket, not {CRUNCH_KEEP_S3_BUCKET!r}"
    )
if CRUNCH_KEEP_S3_ENDPOINT and not re.match(r"^https?://[^/\s]+(/\S*)?\Z", CRUNCH_KEEP_S3_ENDPOINT):
    raise ImproperlyConfigured(
        f"CRUNCH_KEEP_S3_ENDPOINT must be an http:// or https:// URL, not "
        f"{CRUNCH_KEEP_S3_ENDPOINT!r}"
    )
# How long a signed block locator stays valid, in seconds (Arvados' blobSignatureTtl).
CRUNCH_BLOB_SIGNATURE_TTL = env_int("CRUNCH_BLOB_SIGNATURE_TTL", 14 * 24 * 3600, minimum=60)


def _secret_key() -> str:
    configured = env_str("CRUNCH_SECRET_KEY")
    if configured:
        return configured
    # First run without a configured key: keep one in the data directory so sessions
    # survive restarts.
    path = CRUNCH_DATA_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        CRUNCH_DATA_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("CRUNCH_DEBUG", False)
ALLOWED_HOSTS = env_list("CRUNCH_ALLOWED_HOSTS", ["*"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "jobs",
]

MIDDLEWARE = [
    "api.middleware.ArvadosRequestMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "api.urls"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "api.asgi.application"
WSGI_APPLICATION = "api.wsgi.application"

_database_url = env_str("DATABASE_URL") or f"sqlite:///{CRUNCH_DATA_DIR / 'crunch.sqlite3'}"
try:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60)}
except Exception as exc:  # dj_database_url raises several types for a malformed URL
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
_engine = DATABASES["default"]["ENGINE"]
if _engine.endswith("sqlite3"):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
    # Take the write lock when a transaction begins: a read-then-write transaction that has
    # to upgrade its lock fails at once with "database is locked" when another process
    # writes (several workers), instead of waiting up to the timeout.
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
elif _engine.endswith("postgresql"):
    # A pool: Django's ASGI handler runs each request on its own thread, so persistent
    # connections are never reused and every request would pay for a new connection.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("CRUNCH_DB_POOL_SIZE", 10, minimum=1),
        "timeout": 30,
    }
    # Prepared statements: parameters are bound by the server, and a statement run
    # CRUNCH_DB_PREPARE_THRESHOLD times on a pooled connection is prepared there, so
    # PostgreSQL stops planning it again (planning was most of each query's time: 0.15-0.36
    # ms of the token, permission and reuse queries, which take 0.01-0.15 ms to run).
    # 0 turns preparing off (parameters are then still bound by the server).
    _prepare_threshold = env_int("CRUNCH_DB_PREPARE_THRESHOLD", 5, minimum=0)
    DATABASES["default"]["OPTIONS"]["server_side_binding"] = True
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = _prepare_threshold or None
else:
    raise ImproperlyConfigured(
        f"DATABASE_URL must name PostgreSQL (postgres://) or SQLite (sqlite://), not {_engine}"
    )
CRUNCH_DB_IS_POSTGRES = _engine.endswith("postgresql")

REDIS_URL = env_redis_url("REDIS_URL")

AUTH_USER_MODEL = "jobs.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = CRUNCH_DATA_DIR / "static"

# Upload limits: request bodies (job parameters, manifests) stay well below this.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("CRUNCH_MAX_REQUEST_SIZE", 128 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10000

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["api.renderers.ArvadosJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "api.exceptions.exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "api.renderers.AlwaysJSONNegotiation",
}

# Celery: the broker is Redis in production; without REDIS_URL a filesystem broker that
# needs no server (for `make run`).
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
# Celery's Django fix-up closes the database connections (and with it the connection pool)
# around every task unless told to reuse them: a new PostgreSQL session per job otherwise.
CELERY_DB_REUSE_MAX = 1000
# Called with a job uuid after the transaction that queued the job commits (empty: nothing).
CRUNCH_DISPATCHER = env_str("CRUNCH_DISPATCHER", "crunch.dispatch.send")
# Where workers reach the API (git over HTTP, Keep) and what they tell scripts: where
# clients reach it (CRUNCH_EXTERNAL_URL) unless said otherwise.
CRUNCH_API_URL = (
    env_str("CRUNCH_API_URL").strip() or CRUNCH_EXTERNAL_URL or "http://127.0.0.1:8000"
).rstrip("/")
if not re.match(r"^https?://[^/\s]+(/\S*)?\Z", CRUNCH_API_URL):
    raise ImproperlyConfigured(
        f"CRUNCH_API_URL (or CRUNCH_EXTERNAL_URL) must be an http:// or https:// URL, not "
        f"{CRUNCH_API_URL!r}"
    )
# Workers: the labels their node offers to jobs' constraints (key=value or a word), and
# their GPUs (jobs.placement).
CRUNCH_WORKER_LABELS = env_labels("CRUNCH_WORKER_LABELS")
CRUNCH_WORKER_GPUS = env_int("CRUNCH_WORKER_GPUS", 0, minimum=0)
# Workers: custom resources their node offers (`NPU=2,TPU=1`), matched against jobs'
# runtime_constraints.resources.
CRUNCH_WORKER_RESOURCES = env_resources("CRUNCH_WORKER_RESOURCES")
# Workers: heartbeat interval, how long a silent worker counts as alive, how often the
# sweeper runs, and how long a queued job waits before its hint is sent again.
CRUNCH_WORKER_HEARTBEAT = env_int("CRUNCH_WORKER_HEARTBEAT", 5, minimum=1)
CRUNCH_WORKER_TTL = env_int("CRUNCH_WORKER_TTL", 30, minimum=2)
CRUNCH_SWEEP_SECONDS = env_int("CRUNCH_SWEEP_SECONDS", 10, minimum=1)
CRUNCH_REQUEUE_SECONDS = env_int("CRUNCH_REQUEUE_SECONDS", 30, minimum=1)
# How long a job's own token lives at most (seconds); it is revoked when the job ends.
CRUNCH_JOB_TOKEN_TTL = env_int("CRUNCH_JOB_TOKEN_TTL", 7 * 24 * 3600, minimum=60)
CELERY_BROKER_FILESYSTEM_DIR = CRUNCH_DATA_DIR / "broker"
# Workers: where runs happen, the user scripts run as when the worker is root, the container
# engine's command (empty: docker if its engine answers, else podman) and extra options for
# `<engine> run`.
CRUNCH_WORK_DIR = Path(
    env_str("CRUNCH_WORK_DIR") or Path(tempfile.gettempdir()) / "crunch-work"
).resolve()
CRUNCH_RUN_AS = env_command("CRUNCH_RUN_AS") or "nobody"
CRUNCH_CONTAINER_CLI = env_command("CRUNCH_CONTAINER_CLI")
CRUNCH_CONTAINER_RUN_ARGS = env_words("CRUNCH_CONTAINER_RUN_ARGS")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("CRUNCH_LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.request": {"level": "ERROR"}},
}
