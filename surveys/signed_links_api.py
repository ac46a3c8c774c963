"""``/api/v1/projects/{id}/signing-secret/``: the project's secret for signed anonymous links.

GET tells whether one is active (never the secret), POST issues one (rotating the previous
out, at once or after ``grace_hours``) and answers it once, DELETE revokes them. Brand and
project admins only; another brand's project answers 404. The rules live in
``projects.signed_links``.
"""

from __future__ import annotations

from datetime import timedelta

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from brands.api.base import StrictSerializer
from brands.roles import Role
from brands.rotation import MAX_GRACE_HOURS
from projects.api import ProjectScopedMixin
from surveys.signed_links import (
    signing_secret_active,
    signing_secret_in_grace,
    signing_secret_issue,
    signing_secret_revoke,
)


class PreviousSecretSerializer(serializers.Serializer):
    hint = serializers.CharField()
    accepted_until = serializers.DateTimeField()


class SigningSecretStateSerializer(serializers.Serializer):
    active = serializers.BooleanField()
    hint = serializers.CharField(help_text="The secret's last four characters.")
    created_at = serializers.DateTimeField(allow_null=True)
    anonymous_url = serializers.CharField()
    previous = PreviousSecretSerializer(
        allow_null=True, help_text="A rotated secret still accepted, if any."
    )


class SigningSecretRotateSerializer(StrictSerializer):
    grace_hours = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_GRACE_HOURS,
        help_text="Keep the previous secret valid this many hours (default 0: it stops now).",
    )


class SigningSecretIssuedSerializer(SigningSecretStateSerializer):
    secret = serializers.CharField(help_text="Shown once: store it now.")


def _state(project, record) -> dict:
    previous = signing_secret_in_grace(project=project)
    return {
        "active": record is not None,
        "hint": record.hint if record else "",
        "created_at": record.created_at if record else None,
        "anonymous_url": project.anonymous_url,
        "previous": {"hint": previous.hint, "accepted_until": previous.accepted_until}
        if previous
        else None,
    }


class SigningSecretView(ProjectScopedMixin, APIView):
    read_role = Role.PROJECT_ADMIN
    write_role = Role.PROJECT_ADMIN

    @extend_schema(responses=SigningSecretStateSerializer)
    def get(self, request, project_pk):
        """Whether the project has an active signing secret (its last characters only)."""
        return ApiResponse(_state(self.project, signing_secret_active(project=self.project)))

    @extend_schema(
        request=SigningSecretRotateSerializer, responses={201: SigningSecretIssuedSerializer}
    )
    def post(self, request, project_pk):
        """Issue a signing secret, or rotate it: URLs signed with the previous one stop
        answering at once, or after ``grace_hours`` (at most 168) so that links already sent
        keep working while your templates switch. The answer is the only time the secret is
        shown."""
        body = SigningSecretRotateSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        record, plain = signing_secret_issue(
            project=self.project,
            actor=self.actor(),
            grace=timedelta(hours=body.validated_data.get("grace_hours", 0)),
        )
        return ApiResponse(
            {**_state(self.project, record), "secret": plain}, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, project_pk):
        """Revoke the secret: every URL signed with it answers "not valid" (403)."""
        signing_secret_revoke(project=self.project)
        return ApiResponse(status=status.HTTP_204_NO_CONTENT)
