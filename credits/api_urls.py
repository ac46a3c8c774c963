from django.urls import path

from credits.api import CreditBalanceView, CreditEntryList, CreditGrantCreate, CreditUsageView

urlpatterns = [
    path("balance/", CreditBalanceView.as_view(), name="credit-balance"),
    path("entries/", CreditEntryList.as_view(), name="credit-entries"),
    path("grants/", CreditGrantCreate.as_view(), name="credit-grants"),
    path("usage/", CreditUsageView.as_view(), name="credit-usage"),
]
