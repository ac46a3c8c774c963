"""API routes of the survey, included by ``config/api_urls.py`` (names in ``api:``)."""

from django.urls import path, re_path

from surveys import api as views
from surveys.signed_links_api import SigningSecretView

P = "projects/<int:project_pk>"

urlpatterns = [
    path(f"{P}/questions/", views.QuestionList.as_view(), name="question-list"),
    path(f"{P}/questions/reorder/", views.QuestionReorder.as_view(), name="question-reorder"),
    path(f"{P}/questions/<int:pk>/", views.QuestionDetail.as_view(), name="question-detail"),
    path(f"{P}/responses/", views.ResponseList.as_view(), name="response-list"),
    path(f"{P}/responses.csv", views.ResponsesCsv.as_view(), name="response-csv"),
    path(f"{P}/responses/<int:pk>/", views.ResponseDetail.as_view(), name="response-detail"),
    path(
        f"{P}/responses/<int:pk>/reset/", views.ResponseResetView.as_view(), name="response-reset"
    ),
    path(f"{P}/links/", views.LinkList.as_view(), name="link-list"),
    path(f"{P}/links.csv", views.LinksCsv.as_view(), name="link-csv"),
    path(f"{P}/signing-secret/", SigningSecretView.as_view(), name="signing-secret"),
    re_path(
        r"^projects/(?P<project_pk>[0-9]+)/qr\.(?P<kind>png|svg)$",
        views.AnonymousQrCode.as_view(),
        name="project-qr",
    ),
]
