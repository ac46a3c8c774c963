from django.urls import path

from optouts import webhooks

app_name = "optout-webhooks"

urlpatterns = [
    path("twilio/inbound/", webhooks.twilio_inbound, name="twilio-inbound"),
]
