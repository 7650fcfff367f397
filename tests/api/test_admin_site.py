"""Every model's admin list and change pages render for a staff user."""

import pytest
from django.urls import reverse

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

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "model", [User, Group, ApiClientAuthorization, Link, Collection, Job, Repository, Node]
)
def test_admin_pages_render(client, admin, api, model):
    admin_user, token = admin
    admin_user.set_password("pw")
    admin_user.save()
    api.ok("POST", "links", body={"link": {"link_class": "tag"}}, token=token)
    api.ok("POST", "groups", body={"group": {"name": "g"}}, token=token)
    api.ok("POST", "collections", body={"collection": {"name": "c"}}, token=token)
    if model is Job:
        from django.utils import timezone

        now = timezone.now()
        Job.objects.create(
            uuid=Job.new_uuid(),
            owner_uuid=admin_user.uuid,
            created_at=now,
            modified_at=now,
            repository="admin/x",
            script="s",
            script_version="a" * 40,
            script_parameters={},
            script_parameters_digest="99914b932bd37a50b983c5e7c90ae93b",
            state="Queued",
        )
    assert client.login(username="admin", password="pw")
    opts = model._meta
    changelist = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert changelist.status_code == 200
    obj = model.objects.first()
    if obj is not None:
        change = client.get(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )
        assert change.status_code == 200


def test_the_node_list_says_which_nodes_are_up_and_their_labels(client, admin):
    import datetime as dt

    from django.utils import timezone

    from jobs.services import runs

    admin_user, _ = admin
    admin_user.set_password("pw")
    admin_user.save()

    def register(name):
        return runs.node_register(
            hostname=name, cpus=2, ram_bytes=2**30, gpus=0, labels={"region": "r1"}, slots=1
        )

    register("alive@host")
    gone = register("gone@host")
    Node.objects.filter(pk=gone.pk).update(last_ping_at=timezone.now() - dt.timedelta(hours=1))
    assert client.login(username="admin", password="pw")
    page = client.get(reverse("admin:jobs_node_changelist")).content.decode()
    rows = {
        name: page[page.index(name) : page.index("</tr>", page.index(name))]
        for name in ("alive@host", "gone@host")
    }
    assert ">up<" in rows["alive@host"] and ">down<" in rows["gone@host"]
    assert "region=r1" in rows["alive@host"]
