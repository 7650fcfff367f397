"""Arvados object identifiers: `<cluster prefix>-<type infix>-<15 base-36 characters>`."""

from __future__ import annotations

import hashlib
import re
import secrets

from django.conf import settings

UUID_RE = re.compile(r"^[0-9a-z]{5}-[0-9a-z]{5}-[0-9a-z]{15}\Z")
BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def to_base36(number: int) -> str:
    if number == 0:
        return "0"
    digits = []
    while number:
        number, rem = divmod(number, 36)
        digits.append(BASE36[rem])
    return "".join(reversed(digits))


def infix_for(class_name: str) -> str:
    """The type infix: the MD5 of the class name as a base-36 number, last five digits."""
    return to_base36(int(hashlib.md5(class_name.encode()).hexdigest(), 16))[-5:]


# Every kind Arvados clients may name (is_a filters, owner checks), by class name.
KNOWN_CLASSES = (
    "Job",
    "Repository",
    "Collection",
    "Link",
    "User",
    "ApiClientAuthorization",
    "Node",
    "Group",
    "JobTask",
    "PipelineInstance",
    "PipelineTemplate",
    "Log",
    "ApiClient",
    "KeepService",
)


def kind_for(class_name: str) -> str:
    return "arvados#" + class_name[0].lower() + class_name[1:]


INFIX_BY_KIND = {kind_for(name): infix_for(name) for name in KNOWN_CLASSES}
CLASS_BY_INFIX = {infix_for(name): name for name in KNOWN_CLASSES}


def generate(class_name: str) -> str:
    random_part = "".join(secrets.choice(BASE36) for _ in range(15))
    return f"{settings.CRUNCH_UUID_PREFIX}-{infix_for(class_name)}-{random_part}"


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and bool(UUID_RE.match(value))


def infix_of(uuid: str) -> str | None:
    return uuid[6:11] if is_uuid(uuid) else None


def system_user_uuid() -> str:
    return f"{settings.CRUNCH_UUID_PREFIX}-tpzed-000000000000000"


def all_users_group_uuid() -> str:
    return f"{settings.CRUNCH_UUID_PREFIX}-j7d0g-fffffffffffffff"


def anonymous_group_uuid() -> str:
    return f"{settings.CRUNCH_UUID_PREFIX}-j7d0g-anonymouspublic"


def anonymous_user_uuid() -> str:
    return f"{settings.CRUNCH_UUID_PREFIX}-tpzed-anonymouspublic"
