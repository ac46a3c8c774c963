"""Pages for distributions (mounted at the site root: project tabs live under projects/)."""

from django.urls import path

from distributions import everyday_views, views
from distributions.email_views import EmailSettingsView
from distributions.ops_views import SendingNowView
from distributions.policy_views import FrequencyRulesView
from distributions.provider_views import ProviderSettingsView

app_name = "distributions"

urlpatterns = [
    path("frequency-rules/", FrequencyRulesView.as_view(), name="frequency_rules"),
    path("projects/<int:project_pk>/sms/", views.ProjectSmsView.as_view(), name="project_sms"),
    path("projects/<int:project_pk>/sms/new/", views.ScheduleView.as_view(), name="create"),
    path(
        "projects/<int:project_pk>/sms/preview-count/",
        views.PreviewCountView.as_view(),
        name="preview_count",
    ),
    path(
        "projects/<int:project_pk>/sms/bulk-edit/",
        views.BulkEditView.as_view(),
        name="bulk_edit",
    ),
    path(
        "projects/<int:project_pk>/email/", views.ProjectEmailView.as_view(), name="project_email"
    ),
    path(
        "projects/<int:project_pk>/email/new/",
        views.EmailScheduleView.as_view(),
        name="email_create",
    ),
    path(
        "projects/<int:project_pk>/email/preview-count/",
        views.PreviewCountView.as_view(channel="email"),
        name="email_preview_count",
    ),
    path("distributions/", views.BrandDistributionsView.as_view(), name="list"),
    path("distributions/<int:pk>/", views.DistributionDetailView.as_view(), name="detail"),
    path("distributions/<int:pk>/live/", views.LiveView.as_view(), name="live"),
    path("distributions/<int:pk>/edit/", views.EditView.as_view(), name="edit"),
    path("distributions/<int:pk>/preview/", views.PreviewView.as_view(), name="preview"),
    path("distributions/<int:pk>/cancel/", views.CancelView.as_view(), name="cancel"),
    path("distributions/<int:pk>/copy/", everyday_views.CopyView.as_view(), name="copy"),
    path("distributions/<int:pk>/retry/", everyday_views.RetryView.as_view(), name="retry"),
    path("distributions/<int:pk>/resend/", everyday_views.ResendView.as_view(), name="resend"),
    path("distributions/<int:pk>/test/", everyday_views.TestMessageView.as_view(), name="test"),
    path("distributions/<int:pk>/delete/", everyday_views.DeleteView.as_view(), name="delete"),
    path("distributions/<int:pk>/archive/", everyday_views.ArchiveView.as_view(), name="archive"),
    path("library/", everyday_views.LibraryView.as_view(), name="library"),
    path("library/<int:pk>/", everyday_views.LibraryEditView.as_view(), name="library_edit"),
    path(
        "distributions/<int:pk>/history.csv",
        views.HistoryCsvView.as_view(),
        name="history_csv",
    ),
    path("outbox/", views.OutboxView.as_view(), name="outbox"),
    path("ops/sending/", SendingNowView.as_view(), name="ops_sending"),
    path("settings/sms/", ProviderSettingsView.as_view(), name="provider"),
    path("settings/email/", EmailSettingsView.as_view(), name="email_settings"),
]
