"""Project tabs of the survey under ``projects/<pk>/`` (names in ``projects:``, see
``projects/urls.py``): the editor, links and QR code, signing secret, responses."""

from django.urls import path, re_path

from surveys import views

urlpatterns = [
    path("<int:pk>/survey/", views.SurveyView.as_view(), name="survey"),
    path(
        "<int:pk>/survey/questions/<int:question_pk>/",
        views.QuestionView.as_view(),
        name="question",
    ),
    path("<int:pk>/links/", views.LinksView.as_view(), name="links"),
    path("<int:pk>/links/generate/", views.LinksGenerateView.as_view(), name="links-generate"),
    path("<int:pk>/links.csv", views.LinksCsvView.as_view(), name="links-csv"),
    path(
        "<int:pk>/links/signing-secret/",
        views.SigningSecretPageView.as_view(),
        name="signing-secret",
    ),
    re_path(r"^(?P<pk>[0-9]+)/qr\.(?P<kind>png|svg)$", views.QrCodeView.as_view(), name="qr"),
    path("<int:pk>/responses/", views.ResponsesView.as_view(), name="responses"),
    path(
        "<int:pk>/responses/<int:response_pk>/reset/",
        views.ResponseResetPageView.as_view(),
        name="response-reset",
    ),
    path("<int:pk>/responses/live/", views.ResponsesLiveView.as_view(), name="responses-live"),
    path("<int:pk>/responses.csv", views.ResponsesCsvView.as_view(), name="responses-csv"),
]
