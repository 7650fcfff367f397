"""Spec §1.3: ownership, permission links, groups, admins, inactive users; 404 vs 403."""

from __future__ import annotations

import pytest

from tests.api.test_conventions import assert_error

pytestmark = pytest.mark.django_db


def make_link(api, token, **attrs):
    return api.ok("POST", "links", body={"link": attrs}, token=token)


def grant(api, token, tail, head, level):
    return make_link(
        api, token, link_class="permission", name=level, tail_uuid=tail, head_uuid=head
    )


@pytest.fixture
def three(make_user):
    return make_user("owner"), make_user("friend"), make_user("stranger")


def test_owner_reads_and_writes_stranger_sees_nothing(api, three):
    (owner, ot), _, (_, st) = three
    link = make_link(api, ot, link_class="tag", name="mine")
    assert api.get(f"links/{link['uuid']}", token=ot)[0] == 200
    assert_error(*api.get(f"links/{link['uuid']}", token=st), 404, "Path not found")
    assert api.ok("GET", "links", token=st)["items"] == []
    # writing something unreadable also looks missing
    assert_error(*api.put(f"links/{link['uuid']}", body={"link": {"name": "x"}}, token=st), 404)
    assert_error(*api.delete(f"links/{link['uuid']}", token=st), 404)


@pytest.mark.parametrize(
    ("level", "can_write"), [("can_read", False), ("can_write", True), ("can_manage", True)]
)
def test_direct_permission_link(api, three, level, can_write):
    (owner, ot), (friend, ft), _ = three
    link = make_link(api, ot, link_class="tag", name="shared")
    grant(api, ot, friend.uuid, link["uuid"], level)
    assert api.get(f"links/{link['uuid']}", token=ft)[0] == 200
    status, data = api.put(f"links/{link['uuid']}", body={"link": {"name": "changed"}}, token=ft)
    if can_write:
        assert status == 200 and data["name"] == "changed"
    else:
        assert_error(status, data, 403)


def test_group_membership_grants_what_the_group_can(api, three, admin):
    (owner, ot), (friend, ft), (stranger, st) = three
    _, at = admin
    group = api.ok(
        "POST", "groups", body={"group": {"name": "lab", "group_class": "role"}}, token=ot
    )
    link = make_link(api, ot, link_class="tag", name="lab-thing")
    # the group can write the link; friend is a member (can_read on the group)
    grant(api, ot, group["uuid"], link["uuid"], "can_write")
    grant(api, ot, friend.uuid, group["uuid"], "can_read")
    assert api.get(f"links/{link['uuid']}", token=ft)[0] == 200
    # levels compose by their minimum along the path: a can_read member cannot write
    assert_error(*api.put(f"links/{link['uuid']}", body={"link": {"name": "x"}}, token=ft), 403)
    assert api.get(f"links/{link['uuid']}", token=st)[0] == 404


def test_objects_owned_by_a_group_are_readable_by_its_members(api, three):
    (owner, ot), (friend, ft), (stranger, st) = three
    project = api.ok(
        "POST", "groups", body={"group": {"name": "p", "group_class": "project"}}, token=ot
    )
    thing = make_link(api, ot, link_class="tag", name="in-project", owner_uuid=project["uuid"])
    grant(api, ot, friend.uuid, project["uuid"], "can_write")
    assert api.get(f"links/{thing['uuid']}", token=ft)[0] == 200
    assert (
        api.ok("PUT", f"links/{thing['uuid']}", body={"link": {"name": "y"}}, token=ft)["name"]
        == "y"
    )
    assert api.get(f"links/{thing['uuid']}", token=st)[0] == 404


def test_admin_reads_and_writes_everything(api, three, admin):
    (owner, ot), _, _ = three
    _, at = admin
    link = make_link(api, ot, link_class="tag", name="x")
    assert api.get(f"links/{link['uuid']}", token=at)[0] == 200
    assert (
        api.ok("PUT", f"links/{link['uuid']}", body={"link": {"name": "admin"}}, token=at)["name"]
        == "admin"
    )


def test_only_managers_may_grant_permission(api, three):
    (owner, ot), (friend, ft), (stranger, st) = three
    link = make_link(api, ot, link_class="tag")
    grant(api, ot, friend.uuid, link["uuid"], "can_write")
    status, data = api.post(
        "links",
        body={
            "link": {
                "link_class": "permission",
                "name": "can_read",
                "tail_uuid": stranger.uuid,
                "head_uuid": link["uuid"],
            }
        },
        token=ft,
    )
    assert_error(status, data, 403)
    grant(api, ot, friend.uuid, link["uuid"], "can_manage")
    grant(api, ft, stranger.uuid, link["uuid"], "can_read")
    assert api.get(f"links/{link['uuid']}", token=st)[0] == 200


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (
            {"name": "can_fly"},
            "name must be can_read, can_write or can_manage for permission links",
        ),
        (
            {"tail_uuid": "zzzzz-4zz18-aaaaaaaaaaaaaaa"},
            "tail_uuid of a permission link must be a user or group uuid",
        ),
    ],
)
def test_permission_link_validation(api, three, attrs, message):
    (owner, ot), (friend, _), _ = three
    body = {
        "link_class": "permission",
        "name": "can_read",
        "tail_uuid": friend.uuid,
        "head_uuid": owner.uuid,
    } | attrs
    assert_error(*api.post("links", body={"link": body}, token=ot), 422, message)


def test_owner_rules(api, three):
    (owner, ot), (friend, ft), _ = three
    assert_error(
        *api.post(
            "links",
            body={"link": {"link_class": "t", "owner_uuid": "zzzzz-4zz18-aaaaaaaaaaaaaaa"}},
            token=ot,
        ),
        403,
        "Owner uuid must be set to User or Group",
    )
    status, data = api.post(
        "links", body={"link": {"link_class": "t", "owner_uuid": friend.uuid}}, token=ot
    )
    assert_error(status, data, 403)
    # changing the owner needs write permission on old and new owner
    link = make_link(api, ot, link_class="t")
    assert_error(
        *api.put(f"links/{link['uuid']}", body={"link": {"owner_uuid": friend.uuid}}, token=ot), 403
    )
    grant(api, ft, owner.uuid, friend.uuid, "can_write")
    moved = api.ok(
        "PUT", f"links/{link['uuid']}", body={"link": {"owner_uuid": friend.uuid}}, token=ot
    )
    assert moved["owner_uuid"] == friend.uuid


def test_group_ownership_cycle_is_refused(api, three):
    (owner, ot), _, _ = three
    a = api.ok("POST", "groups", body={"group": {"name": "a"}}, token=ot)
    b = api.ok("POST", "groups", body={"group": {"name": "b", "owner_uuid": a["uuid"]}}, token=ot)
    assert_error(
        *api.put(f"groups/{a['uuid']}", body={"group": {"owner_uuid": b["uuid"]}}, token=ot),
        403,
        "Owner uuid would create an ownership cycle",
    )


def test_default_owner(api, make_user, admin):
    _, at = admin
    user, token = make_user("withdefault")
    group = api.ok("POST", "groups", body={"group": {"name": "home"}}, token=token)
    api.ok(
        "PUT",
        f"users/{user.uuid}",
        body={"user": {"default_owner_uuid": group["uuid"]}},
        token=token,
    )
    link = make_link(api, token, link_class="t")
    assert link["owner_uuid"] == group["uuid"]


def test_inactive_user_reads_but_cannot_write(api, make_user):
    user, token = make_user("sleepy")
    link = make_link(api, token, link_class="t")
    user.is_active = False
    user.save()
    assert api.get(f"links/{link['uuid']}", token=token)[0] == 200
    assert_error(*api.post("links", body={"link": {"link_class": "t"}}, token=token), 403)
    assert_error(*api.put(f"links/{link['uuid']}", body={"link": {"name": "n"}}, token=token), 403)
    assert_error(*api.delete(f"links/{link['uuid']}", token=token), 403)


def test_users_may_edit_themselves_but_not_their_privileges(api, make_user, admin):
    user, token = make_user("plain")
    other, _ = make_user("other")
    admin_user, at = admin
    assert (
        api.ok("PUT", f"users/{user.uuid}", body={"user": {"first_name": "P"}}, token=token)[
            "first_name"
        ]
        == "P"
    )
    for attrs in ({"is_admin": True}, {"is_active": False}, {"username": "boss"}):
        assert_error(*api.put(f"users/{user.uuid}", body={"user": attrs}, token=token), 403)
    # other users are readable? No: they are neither owned nor shared
    assert api.get(f"users/{other.uuid}", token=token)[0] == 404
    assert_error(*api.post("users", body={"user": {"username": "new"}}, token=token), 403)
    # admins may change privileges and create users
    assert (
        api.ok("PUT", f"users/{user.uuid}", body={"user": {"is_admin": True}}, token=at)["is_admin"]
        is True
    )
    created = api.ok("POST", "users", body={"user": {"username": "fresh"}}, token=at)
    assert created["username"] == "fresh" and created["uuid"].startswith("zzzzz-tpzed-")
    assert_error(*api.post("users", body={"user": {"username": "fresh"}}, token=at), 422)
