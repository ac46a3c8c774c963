from django.urls import path

from webhooks import views

app_name = "webhook_endpoints"

urlpatterns = [
    path("", views.EndpointListView.as_view(), name="list"),
    path("<int:pk>/", views.EndpointDetailView.as_view(), name="detail"),
]
