from django.urls import path

from optouts import views

app_name = "optouts"

urlpatterns = [
    path("", views.OptOutListView.as_view(), name="list"),
    path("new/", views.OptOutCreateView.as_view(), name="create"),
    path("inbound/", views.InboundListView.as_view(), name="inbound"),
    path("<int:pk>/", views.OptOutDetailView.as_view(), name="detail"),
    path("<int:pk>/opt-in/", views.OptOutOptInView.as_view(), name="opt-in"),
]
