"""The operator's page of what is sending now (staff only; anyone else gets 404)."""

from __future__ import annotations

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404
from django.shortcuts import render
from django.views import View

from distributions.ops import sending_now


class SendingNowView(LoginRequiredMixin, View):
    def get(self, request):
        if not request.user.is_staff:
            raise Http404
        return render(request, "distributions/ops_sending.html", {"rows": sending_now()})
