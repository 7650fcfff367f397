"""The write path every resource shares (spec §1.3–§1.6, §2.2 steps 2–12 in general form).

`ResourceService.create/update/delete` take already-decoded attribute dicts. They reject
unknown attributes, coerce values by column type, apply the uuid and owner rules, run the
resource's own checks (`clean`), gather *all* validation messages into one 422, then check
permissions (403) and write in one transaction. Subclasses add rules by overriding `clean`,
`check_permission` and `after_save`; they never re-implement the bookkeeping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from django.db import IntegrityError, models, transaction
from django.db.backends.base.operations import BaseDatabaseOperations
from django.utils import timezone

from jobs import permissions
from jobs.exceptions import Conflict, InvalidRequest, PermissionDenied
from jobs.filters import parse_time, type_name
from jobs.models import ApiClientAuthorization, ArvadosModel, Group, User
from jobs.uuids import UUID_RE, infix_for, infix_of

OWNER_CLASSES = ("User", "Group")


@dataclass
class Actor:
    """Who is acting: the user and the token used (for `modified_by_*`, default owner)."""

    user: User
    auth: ApiClientAuthorization | None = None

    @property
    def client_uuid(self) -> str | None:
        return self.auth.api_client_uuid if self.auth else None


def decode_hash(name: str, value: Any) -> tuple[Any, str | None]:
    """A hash attribute sent as an object or as a JSON string holding one (spec §1.6)."""
    if value is None:
        return None, None
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return None, f"parameter {name} must be a Hash"
        if not isinstance(decoded, dict):
            return None, f"parameter {name} must be a Hash"
        return decoded, None
    if not isinstance(value, dict):
        return None, f"{name} parameter must be Hash, not {type_name(value)}"
    return value, None


def decode_array(name: str, value: Any) -> tuple[Any, str | None]:
    """An array-of-strings attribute sent as an array or as a JSON string holding one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None, f"{name} must be an array of strings"
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None, f"{name} must be an array of strings"
    return value, None


def coerce(field: models.Field, name: str, value: Any) -> tuple[Any, str | None]:
    """Convert a client value to the column's type, or give the validation message."""
    if value is None:
        if field.null or isinstance(field, models.JSONField):
            return None, None
        if isinstance(field, models.CharField | models.TextField):
            return "", None
        return None, f"{name} cannot be null"
    if isinstance(field, models.JSONField):
        if field.name in ("scopes",):
            return value, None
        if field.name in getattr(field.model, "ARRAY_FIELDS", ()):
            return decode_array(name, value)
        return decode_hash(name, value)
    if isinstance(field, models.BooleanField):
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "t", "f"):
            return value.lower() in ("true", "1", "t"), None
        if isinstance(value, int) and value in (0, 1):
            return bool(value), None
        return None, f"{name} must be true or false"
    if isinstance(field, models.DateTimeField):
        if isinstance(value, str):
            parsed = parse_time(value)
            if parsed is not None:
                return parsed, None
        return None, f"{name} is not a valid time: {json.dumps(value)}"
    if isinstance(field, models.IntegerField):
        if isinstance(value, bool):
            return None, f"{name} must be an integer"
        if isinstance(value, int):
            # The column's range (the same on every database: PostgreSQL's).
            low, high = BaseDatabaseOperations.integer_field_ranges.get(
                field.get_internal_type(), (-(2**63), 2**63 - 1)
            )
            if not low <= value <= high:
                return None, f"{name} is out of range ({low} to {high})"
            return value, None
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return coerce(field, name, int(value.strip()))
        return None, f"{name} must be an integer"
    if isinstance(field, models.CharField | models.TextField):
        if not isinstance(value, str):
            return None, f"{name} must be a string, not {type_name(value)}"
        if "\x00" in value:
            return None, f"{name} must not contain NUL characters"
        if field.max_length is not None and len(value) > field.max_length:
            return None, f"{name} is too long (maximum is {field.max_length} characters)"
        return value, None
    return value, None


class ResourceService:
    """Create, update and delete for one model. Subclasses add the resource's rules."""

    model: ClassVar[type[ArvadosModel]]
    # Only admins may create (users, nodes).
    admin_only_create: ClassVar[bool] = False

    # --- hooks -------------------------------------------------------------------------

    def clean(
        self, obj: Any, *, actor: Actor, creating: bool, changed: set[str], errors: list[str]
    ) -> None:
        """Resource-specific validation: append messages to `errors`."""

    def check_permission(self, obj: Any, *, actor: Actor, creating: bool) -> None:
        """Resource-specific permission rules beyond owner write access (raise 403)."""

    def before_write(self, obj: Any, *, actor: Actor, creating: bool, changed: set[str]) -> None:
        """Server-side changes made after the permission checks, just before the write
        (e.g. timestamps that follow a state change). Add what you change to `changed`."""

    def after_save(self, obj: Any, *, actor: Actor, creating: bool) -> None:
        """Side effects inside the transaction (e.g. creating a git repository)."""

    def default_owner(self, actor: Actor) -> str:
        if actor.auth is not None and actor.auth.default_owner_uuid:
            return actor.auth.default_owner_uuid
        if actor.user.default_owner_uuid:
            return actor.user.default_owner_uuid
        return actor.user.uuid

    # --- the shared path ---------------------------------------------------------------

    def _assign(self, obj: Any, attrs: dict[str, Any], errors: list[str]) -> set[str]:
        model = self.model
        unknown = [
            k for k in attrs if k not in model.CLIENT_FIELDS and k not in model.IGNORED_FIELDS
        ]
        if unknown:
            raise InvalidRequest(
                *(f"unknown attribute '{k}' for {model.class_name()}" for k in unknown)
            )
        changed: set[str] = set()
        obj._given = set(attrs)  # what the request named, valid or not (for `clean`)
        for name, value in attrs.items():
            if name in model.IGNORED_FIELDS or name == "uuid":
                continue
            # A concrete column: attrs hold API fields only (checked above), never relations.
            field = cast(models.Field, model._meta.get_field(name))
            converted, error = coerce(field, name, value)
            if error:
                errors.append(error)
                continue
            if getattr(obj, name) != converted:
                setattr(obj, name, converted)
                changed.add(name)
        return changed

    def _check_uuid(self, actor: Actor, uuid: Any, errors: list[str]) -> None:
        if not actor.user.is_admin:
            errors.append("Uuid assignment not permitted")
            return
        if not isinstance(uuid, str) or not UUID_RE.match(uuid):
            errors.append(f"Uuid not a valid Arvados uuid {json.dumps(uuid)}")
            return
        expected = self.model.infix()
        if infix_of(uuid) != expected:
            errors.append(f"Uuid type field is '{infix_of(uuid)}', expected '{expected}'")

    def _check_owner(self, obj: Any, *, actor: Actor, old_owner: str | None) -> None:
        owner = obj.owner_uuid
        owner_infix = infix_of(owner) if isinstance(owner, str) else None
        if owner_infix not in {infix_for(c) for c in OWNER_CLASSES}:
            raise PermissionDenied("Owner uuid must be set to User or Group")
        if isinstance(obj, Group):
            self._check_owner_chain(obj)
        if owner == obj.uuid:
            return  # users own themselves
        if permissions.level_on_uuid(actor.user, owner) < permissions.WRITE:
            if not _owner_exists(owner):
                raise PermissionDenied(f"Owner uuid is not owned by any user: {owner}")
            raise PermissionDenied(f"Permission denied: cannot write to owner {owner}")
        if old_owner and old_owner != owner:
            if permissions.level_on_uuid(actor.user, old_owner) < permissions.WRITE:
                raise PermissionDenied(f"Permission denied: cannot write to owner {old_owner}")

    def _check_owner_chain(self, group: Group) -> None:
        seen = {group.uuid}
        current = group.owner_uuid
        for _ in range(1000):
            if current in seen:
                raise PermissionDenied("Owner uuid would create an ownership cycle")
            seen.add(current)
            if infix_of(current) == infix_for("User"):
                if not User.objects.filter(uuid=current).exists():
                    break
                return
            parent = Group.objects.filter(uuid=current).values_list("owner_uuid", flat=True)
            parent_owner = next(iter(parent), None)
            if parent_owner is None:
                break
            current = parent_owner
        raise PermissionDenied(f"Owner uuid is not owned by any user: {group.owner_uuid}")

    def create(self, *, actor: Actor, attrs: dict[str, Any]) -> Any:
        return self.save_new(actor=actor, obj=self.prepare_new(actor=actor, attrs=attrs))

    def prepare_new(self, *, actor: Actor, attrs: dict[str, Any]) -> Any:
        """A new, validated object that is not saved yet (`save_new` saves it): callers that
        must look at what the server makes of a request before deciding to create it (reuse)
        build it once."""
        if self.admin_only_create and not actor.user.is_admin:
            raise PermissionDenied(f"Only admins may create {self.model.class_name()} objects")
        obj = self.model()
        errors: list[str] = []
        if "uuid" in attrs and attrs["uuid"] is not None:
            self._check_uuid(actor, attrs["uuid"], errors)
            obj.uuid = attrs["uuid"] if not errors else ""
        changed = self._assign(obj, attrs, errors)
        if not obj.owner_uuid:
            obj.owner_uuid = self.default_owner(actor)
        if not obj.uuid:
            obj.uuid = self.model.new_uuid()
        self.clean(obj, actor=actor, creating=True, changed=changed, errors=errors)
        if errors:
            raise InvalidRequest(*errors)
        obj._changed = changed  # type: ignore[attr-defined]
        return obj

    def save_new(self, *, actor: Actor, obj: Any) -> Any:
        """Check permissions and save an object from `prepare_new`."""
        now = timezone.now()
        changed: set[str] = obj._changed
        if not actor.user.is_active:
            raise PermissionDenied("Inactive users cannot create objects")
        self._check_owner(obj, actor=actor, old_owner=None)
        self.check_permission(obj, actor=actor, creating=True)
        self.before_write(obj, actor=actor, creating=True, changed=changed)
        obj.created_at = obj.modified_at = now
        obj.modified_by_user_uuid = actor.user.uuid
        obj.modified_by_client_uuid = actor.client_uuid
        return self._save(obj, actor=actor, creating=True)

    def update(self, *, actor: Actor, obj: Any, attrs: dict[str, Any]) -> Any:
        permissions.require_write(actor.user, obj)
        errors: list[str] = []
        new_uuid = attrs.get("uuid")
        if new_uuid is not None and new_uuid != obj.uuid:
            if not actor.user.is_admin:
                raise InvalidRequest("Uuid change not permitted")
            self._check_uuid(actor, new_uuid, errors)
        old_owner = obj.owner_uuid
        # What was stored before this update, for rules that compare (e.g. job locks).
        obj._before = {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}
        changed = self._assign(obj, attrs, errors)
        self.clean(obj, actor=actor, creating=False, changed=changed, errors=errors)
        if errors:
            raise InvalidRequest(*errors)
        if "owner_uuid" in changed:
            self._check_owner(obj, actor=actor, old_owner=old_owner)
        self.check_permission(obj, actor=actor, creating=False)
        if new_uuid is not None and new_uuid != obj.uuid:
            obj.uuid = new_uuid
            changed.add("uuid")
        self.before_write(obj, actor=actor, creating=False, changed=changed)
        if not changed:
            return obj
        obj.modified_at = timezone.now()
        obj.modified_by_user_uuid = actor.user.uuid
        obj.modified_by_client_uuid = actor.client_uuid
        return self._save(obj, actor=actor, creating=False)

    def delete(self, *, actor: Actor, obj: Any) -> Any:
        permissions.require_write(actor.user, obj)
        obj.delete()
        return obj

    def _save(self, obj: Any, *, actor: Actor, creating: bool) -> Any:
        try:
            with transaction.atomic():
                obj.save()
                self.after_save(obj, actor=actor, creating=creating)
        except IntegrityError:
            raise Conflict(
                f"{obj.class_name()} conflicts with an existing object (a unique value is taken)"
            ) from None
        permissions.forget(actor.user)
        return obj


def _owner_exists(uuid: str) -> bool:
    return User.objects.filter(uuid=uuid).exists() or Group.objects.filter(uuid=uuid).exists()
