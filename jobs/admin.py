"""Django admin: operators browse users, tokens, links, collections, repositories, nodes.

Changes made here go through the same models; the richer queue view comes with jobs.
"""

from __future__ import annotations

from django.contrib import admin

from jobs.models import (
    ApiClientAuthorization,
    Collection,
    Group,
    Job,
    Link,
    Node,
    Repository,
    User,
)

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


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    list_display = ("name", "uuid", "owner_uuid", "created_at")
    search_fields = ("name", "uuid")
    readonly_fields = READ_ONLY_COMMON


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("hostname", "uuid", "job_uuid", "last_ping_at")
    search_fields = ("hostname", "uuid", "job_uuid")
    readonly_fields = READ_ONLY_COMMON


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Jobs. What ran (repository, commit, parameters, image) is read-only: it is the record
    reuse relies on. Operators change priority and description here; cancelling goes through
    the API (or the queue view)."""

    list_display = (
        "uuid",
        "state",
        "repository",
        "script",
        "short_version",
        "priority",
        "owner_uuid",
        "created_at",
        "finished_at",
    )
    list_filter = ("state", "repository", "script", "nondeterministic")
    search_fields = (
        "uuid",
        "script",
        "script_version",
        "supplied_script_version",
        "repository",
        "owner_uuid",
        "output",
    )
    ordering = ("-created_at",)
    readonly_fields = (
        *READ_ONLY_COMMON,
        "repository",
        "script",
        "script_version",
        "supplied_script_version",
        "script_parameters",
        "script_parameters_digest",
        "runtime_constraints",
        "docker_image_locator",
        "arvados_sdk_version",
        "state",
        "running",
        "success",
        "started_at",
        "finished_at",
        "cancelled_at",
        "cancelled_by_user_uuid",
        "cancelled_by_client_uuid",
        "is_locked_by_uuid",
        "output",
        "log",
        "tasks_summary",
        "components",
        "submit_id",
        "owner_uuid",
    )

    @admin.display(description="commit", ordering="script_version")
    def short_version(self, job: Job) -> str:
        return job.script_version[:12]
