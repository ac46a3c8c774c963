from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from config.health import healthz
from config.metrics import metrics_view
from distributions import project_urls as distribution_project_urls
from projects import urls as project_urls
from surveys import urls as survey_urls

# The project pages and the project tabs of the apps above projects, under one namespace.
project_pages = (
    project_urls.urlpatterns + distribution_project_urls.urlpatterns + survey_urls.urlpatterns,
    "projects",
)

urlpatterns = [
    # The API first: its calls are the busiest, and each pattern tried before a match costs
    # time (the page includes below are mounted at "" and hold dozens).
    path("api/v1/", include(("config.api_urls", "api"), namespace="api")),
    # Then the providers' callbacks (a status per message, every inbound reply), before the
    # pages; the webhook endpoints' pages stay before the callbacks' ``<code>/...``.
    path("webhooks/endpoints/", include("webhooks.urls")),
    path("webhooks/", include("distributions.callback_urls")),
    path("", RedirectView.as_view(pattern_name="projects:list", permanent=False), name="home"),
    path("healthz/", healthz, name="healthz"),
    path("metrics/", metrics_view, name="metrics"),
    # Browsers ask for /favicon.ico whatever the page says.
    path("favicon.ico", lambda request: HttpResponsePermanentRedirect(static("img/favicon.svg"))),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("brands/", include("brands.urls")),
    path("projects/", include(project_pages)),
    path("", include("surveys.public_urls")),
    path("", include("participants.urls")),
    path("", include("distributions.urls")),
    path("", include("conversations.urls")),
    path("optouts/", include("optouts.urls")),
    path("credits/", include("credits.urls")),
    path("o/", include("distributions.optout_link_urls")),
]

if settings.RELAY_BENCH_ENDPOINTS:  # benchmarks only (config/bench.py): off by default
    urlpatterns.insert(0, path("api/v1/bench/", include("config.bench")))
