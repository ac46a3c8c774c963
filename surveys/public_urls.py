"""The respondent's URLs, at the root and short (they are texted): /s/<token>, /a/<token>."""

from django.urls import path

from surveys import respondent_views

app_name = "survey"

urlpatterns = [
    path("s/<path:token>", respondent_views.personal_survey, name="personal"),
    path("a/<path:token>", respondent_views.anonymous_survey, name="anonymous"),
]
