"""Admin pages of the Arvados resources other than jobs: users, groups, tokens, links,
collections, repositories and nodes (with their liveness and labels)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.http import HttpRequest, HttpResponse

from jobs.admin.lineage import admin_lineage
from jobs.models import (
    ApiClientAuthorization,
    Collection,
    Group,
    Link,
    Node,
    Repository,
    User,
)
from jobs.placement import NodeView, live_nodes

READ_ONLY_COMMON = (
    "uuid",
    "created_at",
    "modified_at",
    "modified_by_user_uuid",
    "modified_by_client_uuid",
)


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    list_display = ("username", "uuid", "email", "is_active", "is_admin", "created_at")
    list_filter = ("is_active", "is_admin")
    search_fields = ("username", "uuid", "email", "first_name", "last_name")
    readonly_fields = (*READ_ONLY_COMMON, "password", "last_login")
    exclude = ("groups", "user_permissions", "is_staff", "is_superuser")


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ("name", "uuid", "group_class", "owner_uuid", "created_at")
    list_filter = ("group_class",)
    search_fields = ("name", "uuid", "owner_uuid")
    readonly_fields = READ_ONLY_COMMON


@admin.register(ApiClientAuthorization)
class ApiClientAuthorizationAdmin(admin.ModelAdmin):
    list_display = (
        "uuid",
        "user",
        "scopes",
        "expires_at",
        "last_used_at",
        "last_used_by_ip_address",
    )
    search_fields = ("uuid", "user__username")
    readonly_fields = (
        *READ_ONLY_COMMON,
        "token_hash",
        "last_used_at",
        "last_used_by_ip_address",
        "created_by_ip_address",
    )


@admin.register(Link)
class LinkAdmin(admin.ModelAdmin):
    list_display = ("uuid", "link_class", "name", "tail_uuid", "head_uuid", "created_at")
    list_filter = ("link_class",)
    search_fields = ("uuid", "name", "tail_uuid", "head_uuid")
    readonly_fields = READ_ONLY_COMMON


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = (
        "uuid",
        "name",
        "portable_data_hash",
        "file_count",
        "file_size_total",
        "is_trashed",
        "created_at",
    )
    list_filter = ("is_trashed",)
    search_fields = ("uuid", "name", "portable_data_hash")
    readonly_fields = (
        *READ_ONLY_COMMON,
        "portable_data_hash",
        "manifest_text",
        "file_count",
        "file_size_total",
    )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = dict(extra_context or {})
        collection = self.get_object(request, unquote(object_id))
        if collection is not None:
            extra["lineage"] = admin_lineage(request.user, collection.portable_data_hash)
        return super().change_view(request, object_id, form_url, extra)


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    list_display = ("name", "uuid", "owner_uuid", "created_at")
    search_fields = ("name", "uuid")
    readonly_fields = READ_ONLY_COMMON


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("hostname", "uuid", "state", "labels", "first_ping_at", "last_ping_at")
    search_fields = ("hostname", "uuid", "job_uuid")
    readonly_fields = READ_ONLY_COMMON
    ordering = ("-first_ping_at",)

    @admin.display(description="state")
    def state(self, node: Node) -> str:
        """`up` while it heartbeats within CRUNCH_WORKER_TTL (placement's rule), else `down`."""
        return "up" if live_nodes().filter(pk=node.pk).exists() else "down"

    @admin.display(description="labels")
    def labels(self, node: Node) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(NodeView.of(node).labels.items()))
