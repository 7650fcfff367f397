"""Settings for a server started by a benchmark: the product's settings plus a baseline view.

`bench/api.py` starts `crunch serve` with `DJANGO_SETTINGS_MODULE=bench.settings`, so the
baseline (`/bench/bare/<pk>`) runs in the same process, middleware and database connection
handling as the API it is compared with. Nothing in the product imports this module.

`CRUNCH_BENCH_DB_POOL=1` turns on Django's PostgreSQL connection pool (needs `psycopg_pool`),
to measure what per-request connection set-up costs under ASGI.
"""

import os

from api.settings import *  # noqa: F403
from api.settings import DATABASES

ROOT_URLCONF = "bench.bare_urls"

if os.environ.get("CRUNCH_BENCH_DB_POOL") == "1":
    # Pooling and persistent connections exclude each other in Django.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 2, "max_size": 8}
