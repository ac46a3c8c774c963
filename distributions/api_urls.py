"""API routes of a project's reminders and recurring messages, included by
``config/api_urls.py`` (names in ``api:``)."""

from django.urls import path, re_path

from distributions import project_api as views

P = "projects/<int:project_pk>"

urlpatterns = [
    path(f"{P}/reminders/", views.ReminderList.as_view(), name="reminder-list"),
    path(f"{P}/recurrences/", views.SeriesList.as_view(), name="series-list"),
    path("recurrences/<int:pk>/", views.SeriesDetail.as_view(), name="series-detail"),
    re_path(
        r"^recurrences/(?P<pk>[0-9]+)/(?P<action>pause|resume|end)/$",
        views.SeriesAction.as_view(),
        name="series-action",
    ),
]
