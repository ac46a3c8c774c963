from django.urls import path

from distributions import webhooks

app_name = "webhooks"

urlpatterns = [
    path("twilio/status/<int:message_id>/", webhooks.twilio_status_callback, name="twilio-status"),
    path("email/bounces/", webhooks.email_bounce_inbound, name="email-bounces"),
]
