"""The permission backend reads what Django's ModelBackend reads, in one query instead of two."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import roles
from accounts.backends import ModelPermissionBackend


def fresh(user: User) -> User:
    return User.objects.get(pk=user.pk)  # no permission cache from an earlier check


@pytest.fixture
def users(db: Any) -> dict[str, User]:
    direct = Permission.objects.get(codename="view_auditevent")
    plain = User.objects.create_user("plain", password="p" * 20)
    integrator = User.objects.create_user("integrator", password="p" * 20)
    integrator.groups.add(Group.objects.get(name=roles.INTEGRATORS))
    mixed = User.objects.create_user("mixed", password="p" * 20)
    mixed.groups.add(Group.objects.get(name=roles.AUDITORS), Group.objects.get(name=roles.OPERATORS))
    mixed.user_permissions.add(direct)
    only_direct = User.objects.create_user("only-direct", password="p" * 20)
    only_direct.user_permissions.add(direct)
    inactive = User.objects.create_user("inactive", password="p" * 20, is_active=False)
    inactive.groups.add(Group.objects.get(name=roles.OPERATORS))
    superuser = User.objects.create_superuser("root", password="p" * 20)
    return {user.username: user for user in (plain, integrator, mixed, only_direct, inactive, superuser)}


@pytest.mark.parametrize("name", ["plain", "integrator", "mixed", "only-direct", "inactive", "root"])
def test_same_permissions_as_model_backend(users: dict[str, User], name: str) -> None:
    expected = ModelBackend().get_all_permissions(fresh(users[name]))
    assert ModelPermissionBackend().get_all_permissions(fresh(users[name])) == expected
    if name in ("integrator", "mixed", "root"):
        assert expected  # the comparison is not between two empty sets


def test_role_check_costs_one_query_then_none(users: dict[str, User]) -> None:
    user = fresh(users["mixed"])
    with CaptureQueriesContext(connection) as queries:
        assert user.has_perm(roles.REVOKE)
        assert user.has_perm("audit.view_auditevent")
        assert not user.has_perm("auth.delete_user")
    assert len(queries.captured_queries) == 1


def test_a_role_taken_away_is_seen_by_the_next_request(users: dict[str, User]) -> None:
    user = users["integrator"]
    assert fresh(user).has_perm(roles.REGISTER)
    user.groups.clear()
    assert not fresh(user).has_perm(roles.REGISTER)
