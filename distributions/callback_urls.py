"""Provider callbacks (names in ``callbacks:``), mounted at ``webhooks/`` by config/urls.py:
delivery statuses and inbound messages of any registered provider (Twilio's:
``webhooks/twilio/status/<id>/`` and ``webhooks/twilio/inbound/``), bounce reports."""

from django.urls import path

from distributions import callbacks

app_name = "callbacks"

urlpatterns = [
    path("email/bounces/", callbacks.email_bounce_inbound, name="email-bounces"),
    path("<slug:code>/status/<int:message_id>/", callbacks.status_callback, name="status"),
    path("<slug:code>/inbound/", callbacks.inbound_callback, name="inbound"),
]
