"""Fixtures shared by the API's admin tests."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tests.api.admin_helpers import PASSWORD, with_password


@pytest.fixture
def staff(client: Any, admin: tuple[Any, str]) -> Any:
    """The test client logged in as a staff user (the admin), through the login form."""
    user = with_password(admin[0])
    response = client.post(
        reverse("admin:login"),
        {"username": user.username, "password": PASSWORD, "next": reverse("admin:index")},
    )
    assert response.status_code == 302, response.content[:500]
    client.user = user
    return client
