from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView
from rest_framework.routers import SimpleRouter

from brands.api.views import ApiKeyViewSet, BrandPoliciesAPIView, MeView
from conversations.api import SmsKeywordViewSet, SmsSessionViewSet
from distributions.api import DistributionViewSet
from distributions.email_api import (
    EmailDomainViewSet,
    EmailSettingsAPIView,
    EmailSettingsCheckAPIView,
)
from distributions.library_api import LibraryMessageViewSet
from distributions.policy_api import FrequencyRuleViewSet
from distributions.provider_views import ProviderAPIView
from optouts.api import ConsentViewSet, InboundMessageViewSet, OptOutEventViewSet, OptOutViewSet
from participants.api import (
    BulkUpsertView,
    ImportCancel,
    ImportConfirm,
    ImportDetail,
    ImportErrors,
    ImportListCreate,
    ParticipantDetail,
    ParticipantListCreate,
    PersonDetail,
    PersonListCreate,
)
from projects.api import ProjectViewSet
from transactional.api import TransactionalInvites, TransactionalLinkList, TransactionsCsv
from webhooks.api import WebhookEndpointViewSet

# One canonical form, with the slash; config.middleware.ApiOptionalSlashMiddleware answers
# the same paths without it (no redirect).
router = SimpleRouter()
router.register("projects", ProjectViewSet, basename="project")
router.register("api-keys", ApiKeyViewSet, basename="api-key")
router.register("distributions", DistributionViewSet, basename="distribution")
router.register("optouts", OptOutViewSet, basename="optout")
router.register("optout-events", OptOutEventViewSet, basename="optout-event")
router.register("inbound-messages", InboundMessageViewSet, basename="inbound-message")
router.register("webhooks", WebhookEndpointViewSet, basename="webhook-endpoint")
router.register("email-domains", EmailDomainViewSet, basename="email-domain")
router.register("frequency-rules", FrequencyRuleViewSet, basename="frequency-rule")
router.register("library-messages", LibraryMessageViewSet, basename="library-message")
router.register("sms-keywords", SmsKeywordViewSet, basename="sms-keyword")
router.register("sms-sessions", SmsSessionViewSet, basename="sms-session")
router.register("sms-consents", ConsentViewSet, basename="sms-consent")

urlpatterns = [
    # First: the API's busiest route (a link per transaction; Django tries the patterns in
    # order), and before projects.api_urls, whose link list it extends with transactional
    # links.
    path(
        "projects/<int:project_pk>/links/",
        TransactionalLinkList.as_view(),
        name="link-list",
    ),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[]), name="schema"),
    path(
        "docs/",
        SpectacularRedocView.as_view(url_name="api:schema", permission_classes=[]),
        name="docs",
    ),
    path("me/", MeView.as_view(), name="me"),
    path("brand/policies/", BrandPoliciesAPIView.as_view(), name="brand-policies"),
    path("sms-provider/", ProviderAPIView.as_view(), name="sms-provider"),
    path("email-settings/", EmailSettingsAPIView.as_view(), name="email-settings"),
    path("email-settings/check/", EmailSettingsCheckAPIView.as_view(), name="email-settings-check"),
    path("people/", PersonListCreate.as_view(), name="person-list"),
    path("people/bulk/", BulkUpsertView.as_view(), name="person-bulk"),
    path("people/<int:pk>/", PersonDetail.as_view(), name="person-detail"),
    path(
        "projects/<int:project_pk>/participants/bulk/",
        BulkUpsertView.as_view(),
        name="participant-bulk",
    ),
    path("imports/", ImportListCreate.as_view(), name="import-list"),
    path("imports/<int:pk>/", ImportDetail.as_view(), name="import-detail"),
    path("imports/<int:pk>/confirm/", ImportConfirm.as_view(), name="import-confirm"),
    path("imports/<int:pk>/cancel/", ImportCancel.as_view(), name="import-cancel"),
    path("imports/<int:pk>/errors/", ImportErrors.as_view(), name="import-errors"),
    path(
        "projects/<int:project_pk>/participants/",
        ParticipantListCreate.as_view(),
        name="participant-list",
    ),
    path(
        "projects/<int:project_pk>/participants/<int:pk>/",
        ParticipantDetail.as_view(),
        name="participant-detail",
    ),
    path(
        "distributions/<int:pk>/invites/",
        TransactionalInvites.as_view(),
        name="distribution-transactional-invites",
    ),
    path(
        "distributions/<int:pk>/transactions.csv",
        TransactionsCsv.as_view(),
        name="distribution-transactions-csv",
    ),
    path("", include("surveys.api_urls")),
    path("", include("distributions.api_urls")),
    path("credits/", include("credits.api_urls")),
    path("", include(router.urls)),
]
