"""Workspaces of the dashboard tests, seeded once per session. They are this package's own (not the suite-wide
`tenant` / `other_tenant`): the seed adds a widget, conversations and events that other packages' counts (and a
Free plan's one widget) must not see."""
from __future__ import annotations

import pytest

from tests.analytics_dashboard.data import Seeded, seed_workspace
from tests.factories import WorkspaceWithOwner, member, workspace_with_owner


@pytest.fixture(scope="session")
def ws(django_db_setup, django_db_blocker) -> WorkspaceWithOwner:
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Analytics Workspace")


@pytest.fixture(scope="session")
def other_ws(django_db_setup, django_db_blocker) -> WorkspaceWithOwner:
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Other Analytics Workspace")


@pytest.fixture(scope="session")
def ws_users(ws, django_db_blocker) -> dict[str, object]:
    with django_db_blocker.unblock():
        return {"owner": ws.owner, **{role: member(ws.workspace, role) for role in ("admin", "agent", "viewer")}}


@pytest.fixture(scope="session")
def seeded(ws, django_db_blocker) -> Seeded:
    with django_db_blocker.unblock():
        return seed_workspace(ws.workspace, ws.owner)


@pytest.fixture(scope="session")
def seeded_other(other_ws, django_db_blocker) -> Seeded:
    with django_db_blocker.unblock():
        return seed_workspace(other_ws.workspace, other_ws.owner, marker="OTHERWORKSPACE")
