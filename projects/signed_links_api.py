"""``/api/v1/projects/{id}/signing-secret/``: the project's secret for signed anonymous links.

GET tells whether one is active (never the secret), POST issues one (revoking the previous:
rotation) and answers it once, DELETE revokes it. Brand and project admins only; another
brand's project answers 404. The rules live in ``projects.signed_links``.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from brands.roles import Role
from projects.api_survey import ProjectScopedMixin
from projects.signed_links import (
    signing_secret_active,
    signing_secret_issue,
    signing_secret_revoke,
)


class SigningSecretStateSerializer(serializers.Serializer):
    active = serializers.BooleanField()
    hint = serializers.CharField(help_text="The secret's last four characters.")
    created_at = serializers.DateTimeField(allow_null=True)
    anonymous_url = serializers.CharField()


class SigningSecretIssuedSerializer(SigningSecretStateSerializer):
    secret = serializers.CharField(help_text="Shown once: store it now.")


def _state(project, record) -> dict:
    return {
        "active": record is not None,
        "hint": record.hint if record else "",
        "created_at": record.created_at if record else None,
        "anonymous_url": project.anonymous_url,
    }


class SigningSecretView(ProjectScopedMixin, APIView):
    read_role = Role.PROJECT_ADMIN
    write_role = Role.PROJECT_ADMIN

    @extend_schema(responses=SigningSecretStateSerializer)
    def get(self, request, project_pk):
        """Whether the project has an active signing secret (its last characters only)."""
        return ApiResponse(_state(self.project, signing_secret_active(project=self.project)))

    @extend_schema(request=None, responses={201: SigningSecretIssuedSerializer})
    def post(self, request, project_pk):
        """Issue a signing secret, or rotate it: URLs signed with the previous one stop
        answering at once. The answer is the only time the secret is shown."""
        record, plain = signing_secret_issue(project=self.project, actor=self.actor())
        return ApiResponse(
            {**_state(self.project, record), "secret": plain}, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, project_pk):
        """Revoke the secret: every URL signed with it answers "not valid" (403)."""
        signing_secret_revoke(project=self.project)
        return ApiResponse(status=status.HTTP_204_NO_CONTENT)
