from django.urls import path

from brands.views import BrandSettingsView, BrandSwitchView

app_name = "brands"

urlpatterns = [
    path("switch/", BrandSwitchView.as_view(), name="switch"),
    path("settings/", BrandSettingsView.as_view(), name="settings"),
]
