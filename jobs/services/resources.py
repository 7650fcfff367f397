"""Per-resource rules on top of the shared write path (`objects.ResourceService`)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from django.conf import settings

from jobs import manifests, permissions
from jobs.exceptions import InvalidRequest, PermissionDenied
from jobs.models import (
    PERMISSION_LEVELS,
    ApiClientAuthorization,
    Collection,
    Group,
    Link,
    Node,
    Repository,
    User,
)
from jobs.selectors import object_by_uuid
from jobs.services.objects import Actor, ResourceService
from jobs.uuids import infix_for, infix_of


class UserService(ResourceService):
    model = User
    admin_only_create = True

    def clean(
        self, obj: Any, *, actor: Actor, creating: bool, changed: set[str], errors: list[str]
    ) -> None:
        if creating and not obj.username:
            errors.append("username must be given")
        if obj.username and User.objects.filter(username=obj.username).exclude(pk=obj.pk).exists():
            errors.append(f"Username {obj.username} is already taken")
        if creating and not obj.owner_uuid:
            from jobs.services.tokens import system_user

            obj.owner_uuid = system_user().uuid

    def default_owner(self, actor: Actor) -> str:
        from jobs.services.tokens import system_user

        return system_user().uuid

    def update(self, *, actor: Actor, obj: Any, attrs: dict[str, Any]) -> Any:
        if not actor.user.is_admin:
            for name in User.ADMIN_FIELDS:
                if name in attrs and attrs[name] != getattr(obj, name):
                    raise PermissionDenied(f"Only admins may change {name}")
        return super().update(actor=actor, obj=obj, attrs=attrs)

    def delete(self, *, actor: Actor, obj: Any) -> Any:
        if not actor.user.is_admin:
            raise PermissionDenied("Only admins may delete users")
        return super().delete(actor=actor, obj=obj)


class GroupService(ResourceService):
    model = Group

    def clean(
        self, obj: Any, *, actor: Actor, creating: bool, changed: set[str], errors: list[str]
    ) -> None:
        if not obj.name:
            errors.append("name must be given")
        if obj.group_class not in (None, "", "role", "project"):
            errors.append("group_class must be role or project")


class LinkService(ResourceService):
    model = Link

    def clean(
        self, obj: Any, *, actor: Actor, creating: bool, changed: set[str], errors: list[str]
    ) -> None:
        if not obj.link_class:
            errors.append("link_class must be given")
        if obj.link_class == "permission":
            if obj.name not in PERMISSION_LEVELS:
                errors.append("name must be can_read, can_write or can_manage for permission links")
            if infix_of(obj.tail_uuid or "") not in (infix_for("User"), infix_for("Group")):
                errors.append("tail_uuid of a permission link must be a user or group uuid")
            if not obj.head_uuid:
                errors.append("head_uuid of a permission link must be given")

    def check_permission(self, obj: Any, *, actor: Actor, creating: bool) -> None:
        if obj.link_class != "permission" or actor.user.is_admin:
            return
        head = object_by_uuid(obj.head_uuid or "")
        if head is None:
            raise PermissionDenied(f"Cannot grant permission on unknown object {obj.head_uuid}")
        if permissions.level_on(actor.user, head) < permissions.MANAGE:
            raise PermissionDenied(f"Permission denied: cannot manage {obj.head_uuid}")

    def delete(self, *, actor: Actor, obj: Any) -> Any:
        if obj.link_class == "permission" and not actor.user.is_admin:
            head = object_by_uuid(obj.head_uuid or "")
            if head is None or permissions.level_on(actor.user, head) < permissions.MANAGE:
                permissions.require_write(actor.user, obj)
        return super().delete(actor=actor, obj=obj)


class CollectionService(ResourceService):
    model = Collection

    def clean(
        self, obj: Any, *, actor: Actor, creating: bool, changed: set[str], errors: list[str]
    ) -> None:
        if not (creating or "manifest_text" in changed or "portable_data_hash" in changed):
            return
        try:
            stats = manifests.parse_manifest(obj.manifest_text or "")
        except InvalidRequest as exc:
            errors.extend(exc.messages)
            return
        if not actor.user.is_admin:
            token_id = actor.auth.token_hash if actor.auth else ""
            key = settings.SECRET_KEY.encode()
            now = int(time.time())
            for loc in stats.locators:
                if loc.md5 == manifests.EMPTY_BLOCK[:32] and loc.signature() is None:
                    continue  # no data to protect (as in Arvados): arv-put leaves it unsigned
                if not manifests.signature_valid(loc, token_id=token_id, now=now, key=key):
                    errors.append(f"Block {loc.portable} is not signed for this token")
                    break
        portable = stats.portable_text.encode()
        computed = f"{hashlib.md5(portable).hexdigest()}+{len(portable)}"
        if "portable_data_hash" in changed and obj.portable_data_hash != computed:
            errors.append(
                f"portable_data_hash {obj.portable_data_hash} does not match the manifest "
                f"({computed})"
            )
        # The stored manifest is unsigned: signatures are per caller and expire.
        obj.manifest_text = stats.portable_text
        obj.portable_data_hash = computed
        obj.file_count = stats.file_count
        obj.file_size_total = stats.file_size_total


class TokenService(ResourceService):
    model = ApiClientAuthorization

    def clean(
        self, obj: Any, *, actor: Actor, creating: bool, changed: set[str], errors: list[str]
    ) -> None:
        if not isinstance(obj.scopes, list) or not all(isinstance(s, str) for s in obj.scopes):
            errors.append("scopes must be an array of strings")

    def create(self, *, actor: Actor, attrs: dict[str, Any]) -> Any:
        from jobs.services.tokens import token_create

        errors: list[str] = []
        probe = ApiClientAuthorization(scopes=["all"])
        self._assign(probe, attrs, errors)
        if errors:
            raise InvalidRequest(*errors)
        if not actor.user.is_active:
            raise PermissionDenied("Inactive users cannot create tokens")
        return token_create(
            user=actor.user,
            scopes=probe.scopes if "scopes" in attrs else ["all"],
            expires_at=probe.expires_at,
        )

    def check_permission(self, obj: Any, *, actor: Actor, creating: bool) -> None:
        if obj.user_id != actor.user.pk and not actor.user.is_admin:
            raise PermissionDenied("Tokens belong to their user")


class NodeService(ResourceService):
    model = Node
    admin_only_create = True


SERVICES: dict[type, ResourceService] = {
    User: UserService(),
    Group: GroupService(),
    Link: LinkService(),
    Collection: CollectionService(),
    ApiClientAuthorization: TokenService(),
    Node: NodeService(),
}


def service_for(model: type) -> ResourceService:
    return SERVICES[model]


def register_service(service: ResourceService) -> None:
    SERVICES[service.model] = service


class RepositoryService(ResourceService):
    """Repositories are named `<owner's username>/<name>`; only admins may use another prefix
    or none. Creating one creates its bare repository on disk."""

    model = Repository

    def clean(
        self, obj: Any, *, actor: Actor, creating: bool, changed: set[str], errors: list[str]
    ) -> None:
        from jobs.git import name_errors

        if not obj.name:
            errors.append("name must be given")
            return
        problems = name_errors(obj.name)
        if problems:
            errors.extend(problems)
            return
        if "name" in changed and not actor.user.is_admin:
            owner = User.objects.filter(uuid=obj.owner_uuid).first()
            prefix = f"{owner.username}/" if owner is not None else None
            if prefix is None or not obj.name.startswith(prefix):
                errors.append(
                    f"Repository name must start with {prefix or '<owner username>/'}"
                    if prefix
                    else "Repository owner must be a user to choose the name prefix"
                )

    def after_save(self, obj: Any, *, actor: Actor, creating: bool) -> None:
        if creating:
            from jobs.git import repository_init

            repository_init(obj.uuid)


register_service(RepositoryService())
