from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from accounts.roles import PERMISSIONS, Role


def workspace_context(request: HttpRequest) -> dict[str, Any]:
    workspace = getattr(request, "tenant", None)
    role = getattr(request, "role", None)
    if workspace is None or workspace.schema_name == "public":
        return {"workspace": None, "role": None, "can": {}}
    can = {perm.replace(".", "_"): (role is not None and Role(role) in roles) for perm, roles in PERMISSIONS.items()}
    context: dict[str, Any] = {"workspace": workspace if role else None, "role": role, "can": can}
    if role is not None:
        from accounts.selectors import user_workspaces

        context["user_workspaces"] = user_workspaces(user=request.user)
    return context
