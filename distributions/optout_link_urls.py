"""The public opt-out link, ``/o/<token>`` (short: it is typed into SMS bodies)."""

from django.urls import path

from distributions import optout_link_views as views

app_name = "optout-links"

urlpatterns = [
    path("<str:token>", views.OptOutLinkView.as_view(), name="link"),
    path("<str:token>/", views.OptOutLinkView.as_view()),
]
