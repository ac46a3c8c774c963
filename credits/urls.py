from django.urls import path

from credits.views import LedgerView, UsageCsvView, UsageReportView

app_name = "credits"

urlpatterns = [
    path("", UsageReportView.as_view(), name="usage"),
    path("usage.csv", UsageCsvView.as_view(), name="usage-csv"),
    path("ledger/", LedgerView.as_view(), name="ledger"),
]
