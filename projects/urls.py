"""Project pages (names in ``projects:``). ``config/urls.py`` mounts them at ``projects/``
beside the project tabs of higher apps (``surveys.urls``, ``distributions.project_urls``),
all under the one ``projects`` namespace."""

from django.urls import path

from projects import views

urlpatterns = [
    path("", views.ProjectListView.as_view(), name="list"),
    path("new/", views.ProjectFormView.as_view(), name="create"),
    path("<int:pk>/", views.ProjectDetailView.as_view(), name="detail"),
    path("<int:pk>/edit/", views.ProjectFormView.as_view(), name="edit"),
    path("<int:pk>/stage/", views.ProjectStageView.as_view(), name="stage"),
]
