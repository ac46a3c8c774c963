"""Pages of the everyday distribution work: copy a distribution, try a Failed one again,
resend to the failed recipients of a Sent one, send a test message to oneself, delete a
Scheduled one, archive or restore a finished one, and the brand's message library.

Views only translate HTTP: every write goes through ``copies``, ``archive`` or ``library``
(the same services as the API), every object through ``get_scoped`` (another brand's: 404).
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import View

from brands.roles import Role
from distributions.archive import distribution_archive, distribution_delete, distribution_unarchive
from distributions.copies import (
    distribution_copy,
    distribution_resend,
    distribution_retry,
    distribution_test_send,
)
from distributions.everyday_forms import CopyForm, LibraryMessageForm, TestMessageForm
from distributions.library import (
    library_list,
    library_message_create,
    library_message_delete,
    library_message_update,
    library_segments,
)
from distributions.models import LibraryMessage
from distributions.views import DistributionPageMixin, apply_service_errors
from participants.models import Participant
from projects.models import Project


def _flash_errors(request, exc: ValidationError) -> None:
    for error in exc.messages:
        messages.error(request, error)


def test_participants(distribution):
    """Whose fields a test message may be rendered with: the project's participants."""
    return Participant.objects.filter(project_id=distribution.project_id).select_related("person")


class CopyView(DistributionPageMixin, View):
    """Copy a distribution to this or another project of the brand, scheduled."""

    read_role = Role.PROJECT_ADMIN

    def form(self, distribution, data=None):
        local = timezone.localtime(
            max(distribution.send_at, timezone.now() + timedelta(days=1)), self.brand.zone
        )
        return CopyForm(
            data,
            projects=self.scoped(Project.objects.all()).order_by("name"),
            zone=self.brand.zone,
            initial={
                "project": distribution.project_id,
                "send_date": local.date(),
                "send_time": local.time().replace(second=0, microsecond=0),
            },
        )

    def show(self, request, distribution, form, status=200):
        return render(
            request,
            "distributions/copy.html",
            {
                **self.base_context(),
                "distribution": distribution,
                "project": distribution.project,
                "form": form,
            },
            status=status,
        )

    def get(self, request, pk):
        distribution = self.get_distribution(pk)
        return self.show(request, distribution, self.form(distribution))

    def post(self, request, pk):
        distribution = self.get_distribution(pk)
        form = self.form(distribution, request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                copy = distribution_copy(
                    original=distribution,
                    project=data["project"],
                    send_at=data["send_at"],
                    name=data["name"],
                    actor=request.user,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(
                    request, f"Copied: the copy is scheduled in {copy.project}. Edit it here."
                )
                return redirect("distributions:detail", pk=copy.pk)
        return self.show(request, distribution, form, status=400)


class DeriveView(DistributionPageMixin, View):
    """Try again (Failed) or resend to failed recipients (Sent): a new distribution now."""

    service = staticmethod(distribution_retry)
    done = "Trying again now: this is the new distribution."

    def post(self, request, pk):
        distribution = self.get_distribution(pk)
        try:
            made = self.service(original=distribution, actor=request.user)
        except ValidationError as exc:
            _flash_errors(request, exc)
            return redirect("distributions:detail", pk=distribution.pk)
        messages.success(request, self.done)
        return redirect("distributions:detail", pk=made.pk)


class RetryView(DeriveView):
    pass


class ResendView(DeriveView):
    service = staticmethod(distribution_resend)
    done = "Resending to the failed recipients now: this is the new distribution."


class TestMessageView(DistributionPageMixin, View):
    """Send the message once to the user (rendered with a participant's fields)."""

    def post(self, request, pk):
        distribution = self.get_distribution(pk)
        form = TestMessageForm(request.POST, participants=test_participants(distribution))
        if not form.is_valid():
            for field, errors in form.errors.items():
                for error in errors:
                    messages.error(request, f"Test message: {field}: {error}")
            return redirect(f"{distribution_url(distribution)}#test-messages")
        try:
            test = distribution_test_send(
                original=distribution,
                address=form.cleaned_data["address"],
                participant=form.cleaned_data["participant"],
                actor=request.user,
            )
        except ValidationError as exc:
            _flash_errors(request, exc)
        else:
            row = test.messages.get()
            messages.success(
                request,
                f"Test message to {row.address}: {row.get_status_display()}. It is charged like "
                "any message and not counted in this distribution's metrics.",
            )
        return redirect(f"{distribution_url(distribution)}#test-messages")


def distribution_url(distribution) -> str:
    return reverse("distributions:detail", args=[distribution.pk])


class DeleteView(DistributionPageMixin, View):
    def post(self, request, pk):
        distribution = self.get_distribution(pk)
        try:
            distribution_delete(distribution=distribution, actor=request.user)
        except ValidationError as exc:
            _flash_errors(request, exc)
            return redirect("distributions:detail", pk=distribution.pk)
        messages.success(request, f"Deleted “{distribution}”. The audit trail keeps a record.")
        return redirect(distribution_tab(distribution))


def distribution_tab(distribution) -> str:
    name = "project_email" if distribution.is_email else "project_sms"
    return reverse(f"distributions:{name}", args=[distribution.project_id])


class ArchiveView(DistributionPageMixin, View):
    """Archive a finished distribution, or restore it (``restore`` in the form)."""

    def post(self, request, pk):
        distribution = self.get_distribution(pk)
        if request.POST.get("restore"):
            distribution_unarchive(distribution=distribution, actor=request.user)
            messages.success(request, "Restored: the distribution is listed again.")
        else:
            try:
                distribution_archive(distribution=distribution, actor=request.user)
            except ValidationError as exc:
                _flash_errors(request, exc)
            else:
                messages.success(
                    request,
                    "Archived: hidden from lists (choose Archived in the list's filters to see "
                    "it); its history, credits and usage are kept.",
                )
        return redirect("distributions:detail", pk=distribution.pk)


# --- the message library ----------------------------------------------------------------------
class LibraryView(DistributionPageMixin, View):
    """The brand's saved messages, with a form to add one."""

    def get(self, request):
        return self.show(request, LibraryMessageForm())

    def show(self, request, form, status=200):
        channel = request.GET.get("channel") or ""
        saved = library_list(brand=self.brand, channel=channel or None)
        return render(
            request,
            "distributions/library.html",
            {
                **self.base_context(),
                "items": [(item, library_segments(item)) for item in saved],
                "form": form,
                "channel": channel,
            },
            status=status,
        )

    def post(self, request):
        form = LibraryMessageForm(request.POST)
        if form.is_valid():
            try:
                saved = library_message_create(
                    brand=self.brand, actor=request.user, **form.cleaned_data
                )
            except ValidationError as exc:
                apply_library_errors(form, exc)
            else:
                messages.success(request, f"Saved “{saved}” in the message library.")
                return redirect("distributions:library")
        return self.show(request, form, status=400)


def apply_library_errors(form, exc: ValidationError) -> None:
    for key, errors in exc.message_dict.items():
        form.add_error(key if key in form.fields else None, errors)


class LibraryEditView(DistributionPageMixin, View):
    read_role = Role.PROJECT_ADMIN

    def show(self, request, item, form, status=200):
        return render(
            request,
            "distributions/library_edit.html",
            {
                **self.base_context(),
                "item": item,
                "form": form,
                "segments": library_segments(item),
            },
            status=status,
        )

    def get(self, request, pk):
        item = self.get_scoped(LibraryMessage, pk=pk)
        initial = {name: getattr(item, name) for name in LibraryMessageForm.base_fields}
        return self.show(request, item, LibraryMessageForm(initial=initial))

    def post(self, request, pk):
        item = self.get_scoped(LibraryMessage, pk=pk)
        if request.POST.get("delete"):
            library_message_delete(library_message=item, actor=request.user)
            messages.success(
                request, f"Deleted “{item}”. Distributions made from it keep their text."
            )
            return redirect("distributions:library")
        form = LibraryMessageForm(request.POST)
        if form.is_valid():
            try:
                library_message_update(
                    library_message=item, actor=request.user, **form.cleaned_data
                )
            except ValidationError as exc:
                apply_library_errors(form, exc)
            else:
                messages.success(
                    request,
                    f"Saved “{item}”. Distributions already made from it keep the text they "
                    "copied.",
                )
                return redirect("distributions:library")
        return self.show(request, item, form, status=400)
