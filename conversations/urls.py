from django.urls import path

from conversations import views

app_name = "conversations"

urlpatterns = [
    path("projects/<int:pk>/two-way/", views.SmsPreviewView.as_view(), name="sms_preview"),
    path("projects/<int:pk>/two-way/keywords/", views.KeywordsView.as_view(), name="keywords"),
    path("distributions/<int:pk>/sessions/", views.SessionsView.as_view(), name="sessions"),
]
