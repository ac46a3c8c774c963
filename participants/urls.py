from django.urls import path

from participants import views

app_name = "participants"

urlpatterns = [
    path("people/", views.DirectoryView.as_view(), name="directory"),
    path("people/export.csv", views.DirectoryExportView.as_view(), name="directory-export"),
    path("people/import/", views.ImportUploadView.as_view(), name="directory-import"),
    path("people/<int:pk>/", views.PersonDetailView.as_view(), name="person"),
    path("people/<int:pk>/edit/", views.PersonFormView.as_view(), name="person-edit"),
    path("people/<int:pk>/delete/", views.PersonDeleteView.as_view(), name="person-delete"),
    path(
        "projects/<int:project_pk>/participants/",
        views.ProjectParticipantsView.as_view(),
        name="project",
    ),
    path(
        "projects/<int:project_pk>/participants/export.csv",
        views.ProjectParticipantsExportView.as_view(),
        name="project-export",
    ),
    path(
        "projects/<int:project_pk>/participants/import/",
        views.ImportUploadView.as_view(),
        name="project-import",
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
    path("imports/", views.ImportListView.as_view(), name="imports"),
    path("imports/<int:pk>/", views.ImportDetailView.as_view(), name="import"),
    path("imports/<int:pk>/status/", views.ImportStatusView.as_view(), name="import-status"),
    path("imports/<int:pk>/confirm/", views.ImportConfirmView.as_view(), name="import-confirm"),
    path("imports/<int:pk>/cancel/", views.ImportCancelView.as_view(), name="import-cancel"),
    path("imports/<int:pk>/errors.csv", views.ImportErrorsView.as_view(), name="import-errors"),
]
