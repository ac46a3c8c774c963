from django.urls import path, re_path

from projects import survey_views, views

app_name = "projects"

urlpatterns = [
    path("", views.ProjectListView.as_view(), name="list"),
    path("new/", views.ProjectFormView.as_view(), name="create"),
    path("<int:pk>/", views.ProjectDetailView.as_view(), name="detail"),
    path("<int:pk>/edit/", views.ProjectFormView.as_view(), name="edit"),
    path("<int:pk>/stage/", views.ProjectStageView.as_view(), name="stage"),
    path("<int:pk>/pause/", survey_views.PauseView.as_view(), name="pause"),
    path("<int:pk>/resume/", survey_views.ResumeView.as_view(), name="resume"),
    path("<int:pk>/survey/", survey_views.SurveyView.as_view(), name="survey"),
    path(
        "<int:pk>/survey/questions/<int:question_pk>/",
        survey_views.QuestionView.as_view(),
        name="question",
    ),
    path("<int:pk>/links/", survey_views.LinksView.as_view(), name="links"),
    path(
        "<int:pk>/links/generate/", survey_views.LinksGenerateView.as_view(), name="links-generate"
    ),
    path("<int:pk>/links.csv", survey_views.LinksCsvView.as_view(), name="links-csv"),
    path(
        "<int:pk>/links/signing-secret/",
        survey_views.SigningSecretPageView.as_view(),
        name="signing-secret",
    ),
    re_path(
        r"^(?P<pk>[0-9]+)/qr\.(?P<kind>png|svg)$", survey_views.QrCodeView.as_view(), name="qr"
    ),
    path("<int:pk>/responses/", survey_views.ResponsesView.as_view(), name="responses"),
    path(
        "<int:pk>/responses/live/",
        survey_views.ResponsesLiveView.as_view(),
        name="responses-live",
    ),
    path("<int:pk>/responses.csv", survey_views.ResponsesCsvView.as_view(), name="responses-csv"),
    path("<int:pk>/recurring/", survey_views.SeriesView.as_view(), name="series"),
    re_path(
        r"^(?P<pk>[0-9]+)/recurring/(?P<series_pk>[0-9]+)/(?P<action>pause|resume|end)/$",
        survey_views.SeriesActionView.as_view(),
        name="series-action",
    ),
]
