"""Reading and validating configuration from the environment.

Every setting Crunch has comes from an environment variable (documented in the README).
Values are validated when settings load, so a bad value stops the process at start-up with
a message that names the variable, instead of failing later in a request.
"""

from __future__ import annotations

import os
import re
import shlex

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [part.strip() for part in raw.split(",") if part.strip()]


UUID_PREFIX_RE = re.compile(r"^[0-9a-z]{5}\Z")


def env_uuid_prefix(name: str, default: str) -> str:
    value = env_str(name, default)
    if not UUID_PREFIX_RE.match(value):
        raise ImproperlyConfigured(
            f"{name} must be exactly five lowercase letters or digits, not {value!r}"
        )
    return value


def env_redis_url(name: str) -> str:
    value = env_str(name).strip()
    if value and not re.match(r"^rediss?://", value):
        raise ImproperlyConfigured(f"{name} must start with redis:// or rediss://, not {value!r}")
    return value


def env_words(name: str) -> list[str]:
    """A list of arguments, split like a shell would split them (but never run by one)."""
    raw = env_str(name)
    try:
        return shlex.split(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{name} cannot be split like a shell command line ({exc}): {raw!r}"
        ) from None


_COMMAND_RE = re.compile(r"^[^\s-][^\s]*\Z")


def env_command(name: str, default: str = "") -> str:
    """A command, user name or path handed to the system as one argument: no whitespace, and
    no leading `-` (it would read as an option)."""
    value = env_str(name, default)
    if value and not _COMMAND_RE.match(value):
        raise ImproperlyConfigured(
            f"{name} must be one word that does not start with '-', not {value!r}"
        )
    return value


def env_labels(name: str) -> dict[str, str]:
    """Node labels, `key=value,word,...` (jobs.placement.parse_labels)."""
    from jobs.placement import parse_labels

    try:
        return parse_labels(env_str(name), name=name)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def env_resources(name: str) -> dict[str, float]:
    """Custom resources, `NAME=amount,...` (jobs.placement.parse_resources)."""
    from jobs.exceptions import InvalidRequest
    from jobs.placement import parse_resources

    text = env_str(name)
    pairs: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, amount = item.partition("=")
        try:
            pairs[key.strip()] = float(amount) if sep else float("nan")
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not NAME=amount") from None
    try:
        return dict(parse_resources(pairs))
    except InvalidRequest as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None
