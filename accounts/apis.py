"""REST endpoints for the signed-in principal, members, invitations, API keys and the audit log."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.authentication import ApiKeyPrincipal
from accounts.roles import SCOPES, Role
from config.errors import NotFound


class MeApi(APIView):
    required_permission = "workspace.view"

    class MeOutputSerializer(serializers.Serializer):
        kind = serializers.CharField()
        email = serializers.EmailField(allow_null=True)
        role = serializers.CharField(allow_null=True)
        scopes = serializers.ListField(child=serializers.CharField())
        workspace = serializers.DictField()

    @extend_schema(responses=MeOutputSerializer)
    def get(self, request: Request) -> Response:
        workspace = request._request.tenant
        if isinstance(request.user, ApiKeyPrincipal):
            data = {"kind": "api_key", "email": None, "role": None, "scopes": request.user.api_key.scopes}
        else:
            data = {"kind": "user", "email": request.user.email, "role": request._request.role, "scopes": []}
        data["workspace"] = {"slug": workspace.slug, "name": workspace.name, "plan": workspace.plan}
        return Response(self.MeOutputSerializer(data).data)


class MemberOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField(source="user.email")
    full_name = serializers.CharField(source="user.full_name")
    role = serializers.CharField()
    created_at = serializers.DateTimeField()


class MemberListApi(APIView):
    required_permission = "team.view"

    @extend_schema(responses=MemberOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        members = selectors.membership_list(workspace=request._request.tenant)
        return Response(MemberOutputSerializer(members, many=True).data)


class MemberDetailApi(APIView):
    required_permission = {"PATCH": "team.manage", "DELETE": "team.manage"}

    class MemberRoleInputSerializer(serializers.Serializer):
        role = serializers.ChoiceField(choices=[r.value for r in Role])

    def _membership(self, request: Request, membership_id: int):
        membership = selectors.membership_get(workspace=request._request.tenant, membership_id=membership_id)
        if membership is None:
            raise NotFound("No such member.")
        return membership

    @extend_schema(request=MemberRoleInputSerializer, responses=MemberOutputSerializer)
    def patch(self, request: Request, membership_id: int) -> Response:
        serializer = self.MemberRoleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.membership_role_change(
            membership=self._membership(request, membership_id), role=serializer.validated_data["role"],
            actor=request.user, actor_role=request._request.role,
        )
        return Response(MemberOutputSerializer(membership).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, membership_id: int) -> Response:
        services.membership_remove(
            membership=self._membership(request, membership_id), actor=request.user, actor_role=request._request.role
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationApi(APIView):
    required_permission = {"GET": "team.view", "POST": "team.manage"}

    class InvitationInputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=254)
        role = serializers.ChoiceField(choices=[r.value for r in Role], default=Role.AGENT.value)

    class InvitationOutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        email = serializers.EmailField()
        role = serializers.CharField()
        created_at = serializers.DateTimeField()
        expires_at = serializers.DateTimeField()

    @extend_schema(responses=InvitationOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        invitations = selectors.invitation_list(workspace=request._request.tenant)
        return Response(self.InvitationOutputSerializer(invitations, many=True).data)

    @extend_schema(request=InvitationInputSerializer, responses={201: InvitationOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.InvitationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitation, _token = services.invitation_create(
            workspace=request._request.tenant, invited_by=request.user, actor_role=request._request.role,
            **serializer.validated_data,
        )
        return Response(self.InvitationOutputSerializer(invitation).data, status=status.HTTP_201_CREATED)


class ApiKeyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True, help_text="Refused from then on; null: never expires.")
    is_active = serializers.BooleanField(help_text="Neither revoked nor expired.")


class ApiKeyListCreateApi(APIView):
    required_permission = "api_keys.manage"

    class ApiKeyInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        scopes = serializers.ListField(child=serializers.ChoiceField(choices=list(SCOPES)), required=False, min_length=1)
        expires_at = serializers.DateTimeField(
            required=False, allow_null=True, help_text="Optional: refused from then on (401 api_key_expired).")

    class ApiKeyCreatedSerializer(ApiKeyOutputSerializer):
        key = serializers.CharField(help_text="The secret. Shown once; store it now.")

    @extend_schema(responses=ApiKeyOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(ApiKeyOutputSerializer(selectors.api_key_list(workspace=request._request.tenant), many=True).data)

    @extend_schema(request=ApiKeyInputSerializer, responses={201: ApiKeyCreatedSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.ApiKeyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, raw = services.api_key_create(
            workspace=request._request.tenant, created_by=request.user, **serializer.validated_data
        )
        data = {**ApiKeyOutputSerializer(key).data, "key": raw}
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(APIView):
    required_permission = "api_keys.manage"

    @extend_schema(request=None, responses=ApiKeyOutputSerializer)
    def post(self, request: Request, key_id: int) -> Response:
        key = selectors.api_key_get(workspace=request._request.tenant, key_id=key_id)
        if key is None:
            raise NotFound("No such API key.")
        key = services.api_key_revoke(key=key, actor=request.user)
        return Response(ApiKeyOutputSerializer(key).data)


class AuditLogApi(APIView):
    required_permission = "audit.view"

    class AuditEntryOutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        actor = serializers.CharField(source="actor_label")
        action = serializers.CharField()
        target = serializers.CharField()
        data = serializers.DictField()
        created_at = serializers.DateTimeField()

    @extend_schema(responses=AuditEntryOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        entries = selectors.audit_list(workspace=request._request.tenant)[:500]
        return Response(self.AuditEntryOutputSerializer(entries, many=True).data)


class _JsonForErrors(BaseContentNegotiation):
    """The CSV export answers CSV whatever the Accept header says; its errors are JSON like every other error."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class AuditLogExportApi(APIView):
    """The whole audit log as CSV (columns created_at, actor, action, target, data), oldest first."""

    required_permission = "audit.view"
    content_negotiation_class = _JsonForErrors
    renderer_classes = [JSONRenderer]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request):
        from accounts.views import audit_csv_response

        return audit_csv_response(request._request.tenant)


class OwnershipTransferApi(APIView):
    """Make another member the owner; the calling owner becomes an admin. Owners only, with a session."""

    required_permission = "ownership.transfer"

    class OwnershipTransferInputSerializer(serializers.Serializer):
        membership_id = serializers.IntegerField()

    @extend_schema(request=OwnershipTransferInputSerializer, responses=MemberOutputSerializer)
    def post(self, request: Request) -> Response:
        serializer = self.OwnershipTransferInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = selectors.membership_get(
            workspace=request._request.tenant, membership_id=serializer.validated_data["membership_id"]
        )
        if membership is None:
            raise NotFound("No such member.")
        membership = services.workspace_ownership_transfer(
            workspace=request._request.tenant, to_membership=membership, actor=request.user
        )
        return Response(MemberOutputSerializer(membership).data)
