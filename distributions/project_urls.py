"""Project tabs of distributions under ``projects/<pk>/`` (names in ``projects:``, see
``projects/urls.py``): the pause and resume dialogs, recurring messages."""

from django.urls import path, re_path

from distributions import project_views as views

urlpatterns = [
    path("<int:pk>/pause/", views.PauseView.as_view(), name="pause"),
    path("<int:pk>/resume/", views.ResumeView.as_view(), name="resume"),
    path("<int:pk>/recurring/", views.SeriesView.as_view(), name="series"),
    re_path(
        r"^(?P<pk>[0-9]+)/recurring/(?P<series_pk>[0-9]+)/(?P<action>pause|resume|end)/$",
        views.SeriesActionView.as_view(),
        name="series-action",
    ),
]
