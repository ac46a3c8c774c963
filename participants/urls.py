from django.urls import path

from participants import views

app_name = "participants"

urlpatterns = [
    path("people/", views.DirectoryView.as_view(), name="directory"),
    path("people/<int:pk>/", views.PersonDetailView.as_view(), name="person"),
    path(
        "projects/<int:project_pk>/participants/",
        views.ProjectParticipantsView.as_view(),
        name="project",
    ),
    path(
        "projects/<int:project_pk>/participants/new/",
        views.ParticipantFormView.as_view(),
        name="create",
    ),
    path(
        "projects/<int:project_pk>/participants/<int:pk>/edit/",
        views.ParticipantFormView.as_view(),
        name="edit",
    ),
    path(
        "projects/<int:project_pk>/participants/<int:pk>/remove/",
        views.ParticipantRemoveView.as_view(),
        name="remove",
    ),
]
