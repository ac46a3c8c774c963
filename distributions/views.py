"""Pages for distributions: the project's Text messages (SMS) and Emails tabs, the schedule
form (create and edit, one form per channel), the distribution page (details, metrics, related,
live progress, history), the history download, the brand's distribution list and the outbox.

The SMS and email pages are the same views and templates parametrised by ``channel``: email
adds a subject, From, Reply-To, an HTML body with a sandboxed preview, a plain-text part and
the weekly allowance where SMS has a sender, a segment counter and credits.

Views only translate HTTP: reads come from ``selectors`` and ``page_selectors``, writes go
through ``services``. Every object is fetched through ``BrandPageMixin.get_scoped`` (another
brand's answers 404); GET needs ``read_role``, any other method ``write_role``. Times are shown
and typed in the brand's time zone (activated for the whole request).
"""

from __future__ import annotations

import math
from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import View

from brands.roles import Role
from brands.views import BrandPageMixin
from credits.segments import segment_info
from credits.selectors import credits_available
from distributions import page_selectors
from distributions.api import history_csv_response
from distributions.audit import distribution_audit_list
from distributions.charging import credits_estimate
from distributions.conditions import CRITERION_LABELS, OPERATOR_LABELS, conditions_describe
from distributions.copies import resend_recipient_count, retry_advice
from distributions.email_services import (
    email_account_for,
    email_recipient_estimate,
    platform_domains,
    platform_from_address,
    weekly_limit_error,
)
from distributions.everyday_forms import DistributionFilterForm
from distributions.forms import (
    ONCE_PER_SET_HELP,
    BulkEditForm,
    ConditionRow,
    DownloadHistoryForm,
    EmailScheduleForm,
    ScheduleForm,
    condition_rows_from_conditions,
    condition_rows_from_post,
    condition_rows_validate,
)
from distributions.library import library_list
from distributions.models import Distribution, LibraryMessage, Message
from distributions.selectors import (
    DistributionFilters,
    distribution_list,
    distribution_metrics,
    related_distributions,
    test_messages,
)
from distributions.sending import provider_account_for
from distributions.services import (
    distribution_cancel,
    distribution_create,
    distribution_policy_preview,
    distribution_update,
    distributions_bulk_update,
)
from distributions.stalls import distribution_stalls
from participants.models import Participant
from projects.models import Project

PAGE_SIZE = 25
TEST_MESSAGES_SHOWN = 10
TEST_PARTICIPANTS_SHOWN = 200  # whose fields a test may use: the first ones, in the picker
AUDIT_SHOWN = 20
HISTORY_PAGE_SIZE = 50
OUTBOX_THREADS_PER_PAGE = 10
# A Scheduled distribution due this soon (or overdue: waiting for a worker) is polled too, so
# that "Send now" shows the run start without a reload.
POLL_WHEN_DUE_WITHIN = timedelta(seconds=60)
POLL_SECONDS = 2
# A page opened earlier asks again when polling should begin (once, htmx's "load delay"); at
# most this long, so that a send time edited elsewhere is seen, and within what a browser
# timer can hold (24.8 days).
WAKE_AT_MOST = timedelta(hours=1)
PIPED_FIELDS = [
    ("first_name", "First name"),
    ("last_name", "Last name"),
    ("link", "Personal survey link"),
    ("opt_out_link", "Opt-out link"),
    ("email", "Email"),
    ("person_id", "PersonID"),
    ("username", "User name"),
    ("role", "Project role"),
]
SERVICE_FIELD_MAP = {
    "send_at": "send_time",
    "message": "message",
    "sender": "sender",
    **{name: name for name in ("subject", "text_body", "from_name", "from_address", "reply_to")},
    "trigger": "on_completion",
    "mode": "mode",
}

Kind = Distribution.Kind
Status = Distribution.Status
Channel = Distribution.Channel


def channel_pages(channel: str, project_pk: int) -> dict:
    """Names and addresses of a channel's pages, for crumbs, tabs and buttons."""
    if channel == Channel.EMAIL:
        return {
            "channel": channel,
            "is_email": True,
            "tab_label": "Emails",
            "tab_url": reverse("distributions:project_email", args=[project_pk]),
            "create_url": reverse("distributions:email_create", args=[project_pk]),
            "summary_url": reverse("distributions:email_preview_count", args=[project_pk]),
            "noun": "email",
        }
    return {
        "channel": Channel.SMS,
        "is_email": False,
        "tab_label": "Text messages (SMS)",
        "tab_url": reverse("distributions:project_sms", args=[project_pk]),
        "create_url": reverse("distributions:create", args=[project_pk]),
        "summary_url": reverse("distributions:preview_count", args=[project_pk]),
        "noun": "text message",
    }


def apply_service_errors(form, exc: ValidationError) -> None:
    """Put a service's errors next to the matching field, the rest at the top."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for key, errors in exc.message_dict.items():
        target = SERVICE_FIELD_MAP.get(key)
        form.add_error(target if target in form.fields else None, errors)


def kind_label(distribution: Distribution) -> str:
    channel = distribution.get_channel_display()
    if distribution.kind == Kind.REMINDER:
        if distribution.parent_id:
            return f"{channel} reminder of “{distribution.parent}”"
        return f"{channel} reminder to everyone who has not responded"
    return f"{channel} {distribution.get_kind_display().lower()}"


def audience_label(distribution: Distribution) -> str:
    described = conditions_describe(distribution.conditions or [])
    if distribution.trigger == Distribution.TRIGGER_COMPLETION:
        who = "Each participant who completes the survey"
        return who if not distribution.conditions else f"{who}, where {described}"
    if distribution.kind == Kind.REMINDER:
        not_finished = (
            "who started the survey and did not finish it"
            if distribution.audience == Distribution.AUDIENCE_STARTED
            else "who have not responded"
        )
        who = (
            f"Recipients of “{distribution.parent}” {not_finished}"
            if distribution.parent_id
            else f"Participants {not_finished}"
        )
        return who if not distribution.conditions else f"{who}, where {described}"
    return described


def should_poll(distribution: Distribution) -> bool:
    if distribution.trigger:
        return False  # sends on each completion until stopped: no end to watch for
    if distribution.status == Status.IN_PROGRESS:
        return True
    return (
        distribution.status == Status.SCHEDULED
        and distribution.send_at <= timezone.now() + POLL_WHEN_DUE_WITHIN
    )


def seconds_until_polling(distribution: Distribution) -> int | None:
    """For a Scheduled distribution not yet due within POLL_WHEN_DUE_WITHIN: the whole seconds
    (at least 1) until it is, capped at WAKE_AT_MOST; None when the page has nothing to wait
    for (it polls already, the run is over, or it sends on each completion)."""
    if distribution.trigger or distribution.status != Status.SCHEDULED:
        return None
    if should_poll(distribution):
        return None
    wait = distribution.send_at - POLL_WHEN_DUE_WITHIN - timezone.now()
    return max(1, math.ceil(min(wait, WAKE_AT_MOST).total_seconds()))


class DistributionPageMixin(BrandPageMixin):
    """BrandPageMixin, with the brand's time zone active for the whole request."""

    def dispatch(self, request, *args, **kwargs):
        zone = None
        if request.user.is_authenticated:
            brand = request.brand_context.brand
            zone = brand.zone if brand is not None else None
        with timezone.override(zone):
            return super().dispatch(request, *args, **kwargs)

    def get_project(self, pk) -> Project:
        return self.get_scoped(Project.objects.select_related("brand"), pk=pk)

    def get_distribution(self, pk) -> Distribution:
        return self.get_scoped(
            Distribution.objects.select_related("project__brand", "parent", "created_by"), pk=pk
        )

    channel = Channel.SMS

    def get_parent(self, project: Project, parent_id) -> Distribution | None:
        """The invite a reminder follows: an invite of this project on this channel, or 404."""
        if parent_id in (None, ""):
            return None
        return self.get_scoped(
            page_selectors.project_invites(project=project, channel=self.channel), pk=parent_id
        )

    def base_context(self) -> dict:
        return {
            "brand": self.brand,
            "can_edit": self.can(Role.PROJECT_ADMIN),
            "can_manage_email": self.can(Role.BRAND_ADMIN),
            "zone_name": self.brand.time_zone,
        }


# --- the project's Text messages (SMS) and Emails tabs ---------------------------------------
class ProjectSmsView(DistributionPageMixin, View):
    def get(self, request, project_pk):
        project = self.get_project(project_pk)
        return render_project_sms(
            self, request, project, BulkEditForm(zone=self.brand.zone), channel=self.channel
        )


class ProjectEmailView(ProjectSmsView):
    """The Emails tab: invites, reminders and thank-you messages sent by email."""

    channel = Channel.EMAIL


def render_project_sms(
    view, request, project, bulk_form, *, selected=(), status=200, channel=Channel.SMS
):
    distributions = page_selectors.project_distributions(project=project, channel=channel)
    page = Paginator(distributions, PAGE_SIZE).get_page(request.GET.get("page"))
    page.object_list = page_selectors.with_stalls(page.object_list)
    # Bulk edit changes an SMS text; emails are edited one by one.
    bulk = channel == Channel.SMS
    return render(
        request,
        "distributions/project_sms.html",
        {
            **view.base_context(),
            **channel_pages(channel, project.pk),
            "project": project,
            "page": page,
            "participant_count": project.participants.count(),
            "bulk_form": bulk_form,
            "selected": {str(pk) for pk in selected},
            "has_scheduled": bulk and any(d.status == Status.SCHEDULED for d in page),
        },
        status=status,
    )


class BulkEditView(DistributionPageMixin, View):
    """Change the send time and/or message of several scheduled distributions: all or none."""

    def post(self, request, project_pk):
        project = self.get_project(project_pk)
        ids = request.POST.getlist("ids")
        form = BulkEditForm(request.POST, zone=self.brand.zone)
        try:
            wanted = {int(pk) for pk in ids}
        except ValueError as exc:
            raise Http404("No such distribution.") from exc
        found = list(
            self.scoped(Distribution.objects.all()).filter(
                project=project, channel=Distribution.Channel.SMS, pk__in=wanted
            )
        )
        if len(found) != len(wanted):
            raise Http404("No such distribution.")
        if not found:
            form.add_error(None, "Select at least one scheduled distribution.")
        if form.is_valid():
            try:
                updated = distributions_bulk_update(
                    distributions=found, actor=request.user, **form.cleaned_data["changes"]
                )
            except ValidationError as exc:
                form.add_error(None, "Nothing was changed:")
                for key, errors in exc.message_dict.items():
                    for error in errors:
                        form.add_error(None, f"{key.capitalize()}: {error}")
            else:
                messages.success(request, f"Updated {len(updated)} scheduled distributions.")
                return redirect("distributions:project_sms", project_pk=project.pk)
        return render_project_sms(self, request, project, form, selected=ids, status=400)


# --- schedule form: create and edit -------------------------------------------------------
def channel_kinds(channel: str) -> tuple[str, ...]:
    if channel == Channel.EMAIL:
        return (Kind.INVITE, Kind.REMINDER, Kind.THANK_YOU)
    return (Kind.INVITE, Kind.REMINDER)


def form_class_for(channel: str):
    return EmailScheduleForm if channel == Channel.EMAIL else ScheduleForm


def email_draft_fields(data) -> dict:
    """What the email preview needs from the form as it is (bound data or initial values)."""
    return {
        "subject": data.get("subject") or "",
        "message": data.get("message") or "",
        "text_body": data.get("text_body") or "",
        "on_completion": bool(data.get("on_completion")),
    }


class ScheduleFormMixin(DistributionPageMixin):
    read_role = Role.PROJECT_ADMIN

    def render_form(self, request, *, project, form, parent=None, distribution=None, status=200):
        channel = distribution.channel if distribution else self.channel
        data = form.data if form.is_bound else form.initial
        kind = form.kind_fixed or data.get("kind")
        kind = kind if kind in channel_kinds(channel) else Kind.INVITE
        audience = data.get("audience")
        message = data.get("message", "")
        when = data.get("when")
        metadata_fields = page_selectors.project_metadata_fields(project=project)
        email = email_draft_fields(data) if channel == Channel.EMAIL else None
        return render(
            request,
            "distributions/schedule.html",
            {
                **self.base_context(),
                **channel_pages(channel, project.pk),
                **schedule_summary(
                    brand=self.brand,
                    project=project,
                    kind=kind,
                    parent=parent,
                    audience=audience,
                    reminder_audience=reminder_audience(data, kind),
                    rows=form.condition_rows,
                    message=message or "",
                    channel=channel,
                    email=email,
                    exclude_id=distribution.pk if distribution else None,
                    mode=form.data.get("mode") or (distribution.mode if distribution else ""),
                ),
                **(email_form_context(brand=self.brand) if email is not None else {}),
                "on_completion": bool(email and email["on_completion"]),
                "project": project,
                "form": form,
                "has_field_errors": any(key != "__all__" for key in form.errors),
                "parent": parent,
                "distribution": distribution,
                "kind": kind,
                "condition_rows": form.condition_rows or [ConditionRow()],
                "blank_row": ConditionRow(),
                "audience": "some" if audience == "some" else "all",
                "when": "later" if when == "later" else "now",
                "criteria": list(CRITERION_LABELS.items()),
                "operators": list(OPERATOR_LABELS.items()),
                "once_per_set_help": ONCE_PER_SET_HELP,
                "metadata_fields": metadata_fields,
                "roles": page_selectors.project_roles(project=project),
                "piped_fields": [("${" + name + "}", label) for name, label in PIPED_FIELDS]
                + [("${" + name + "}", "Metadata field") for name in metadata_fields],
                "sample_link": page_selectors.sample_link(),
                "sample_opt_out_link": page_selectors.sample_opt_out_link(),
                "inactive": project.stage != Project.Stage.ACTIVE,
                "library": library_list(brand=self.brand, channel=channel),
                "library_pick": data.get("library_message") or "",
            },
            status=status,
        )


def email_form_context(*, brand) -> dict:
    """From addresses to offer: the brand's default, the platform's, its verified domains."""

    account = email_account_for(brand)
    domains = list(
        page_selectors.verified_email_domains(brand=brand).values_list("domain", flat=True)
    )
    suggestions = [account.default_from_address, platform_from_address()]
    suggestions += [f"surveys@{domain}" for domain in domains]
    return {
        "from_suggestions": list(dict.fromkeys(a for a in suggestions if a)),
        "from_domains": list(dict.fromkeys([*domains, *platform_domains()])),
        "default_from_address": account.default_from_address or platform_from_address(),
        "default_from_name": account.default_from_name,
    }


def schedule_summary(
    *,
    brand,
    project,
    kind,
    parent,
    audience,
    rows,
    message,
    channel=Channel.SMS,
    email=None,
    exclude_id=None,
    mode: str = "",
    reminder_audience: str = "",
) -> dict:
    """The summary for what the form holds now; conditions with errors count nothing."""
    conditions: list = []
    invalid = False
    if parent is None and audience == "some" and rows:
        rows = [ConditionRow(r.criterion, r.field, r.operator, r.value) for r in rows]
        if condition_rows_validate(rows):
            conditions = [row.as_condition() for row in rows]
        else:
            invalid = True
    if channel == Channel.EMAIL:
        return email_summary_context(
            brand=brand,
            project=project,
            kind=kind,
            parent=parent,
            conditions=conditions,
            invalid=invalid,
            email=email or email_draft_fields({"message": message}),
            exclude_id=exclude_id,
        )
    if invalid:
        return {
            "credits_available": credits_available(brand=brand),
            "estimate": None,
            "estimate_over": False,
            "preview": None,
            "conditions_invalid": True,
            "summary_kind": kind,
            "summary_parent": parent,
        }
    return summary_context(
        brand=brand,
        project=project,
        kind=kind,
        parent=parent,
        conditions=conditions,
        message=message,
        mode=mode if mode in Distribution.Mode.values else Distribution.Mode.LINK,
        audience=reminder_audience,
    )


def reminder_audience(data, kind: str) -> str:
    """The reminder audience the form holds: "started" when *Only participants who started*
    is ticked on a reminder (posted "on", or True from the initial values)."""
    ticked = data.get("started_only") in ("on", True, "true")
    return Distribution.AUDIENCE_STARTED if ticked and kind == Kind.REMINDER else ""


def summary_context(
    *, brand, project, kind, parent, conditions, message, mode=Distribution.Mode.LINK, audience=""
) -> dict:
    """Credits available, the estimate and the matching participants (top of the form)."""
    available = credits_available(brand=brand)
    preview = page_selectors.audience_preview(
        project=project, conditions=conditions, kind=kind, parent=parent, audience=audience
    )
    estimate = credits_estimate(
        project=project,
        message=message,
        conditions=conditions,
        kind=kind,
        parent=parent,
        mode=mode,
        audience=audience,
    )
    over = False
    if estimate is not None:
        balance = estimate.get("available", available)
        over = estimate.get("covered") is False or (
            balance is not None
            and estimate.get("credits") is not None
            and estimate["credits"] > balance
        )
    return {
        "credits_available": available,
        "estimate": estimate,
        "estimate_over": over,
        "held": distribution_policy_preview(
            project=project,
            kind=kind,
            parent=parent,
            conditions=conditions,
            mode=mode,
            audience=audience,
        ),
        "preview": preview,
        "conditions_invalid": False,
        "summary_kind": kind,
        "summary_parent": parent,
    }


def email_summary_context(
    *, brand, project, kind, parent, conditions, invalid, email, exclude_id=None
) -> dict:
    """The email form's summary: matching participants, the weekly allowance (with the
    service's own limit message when this send would pass it) and the rendered preview."""

    draft = Distribution(
        project=project,
        kind=kind,
        parent=parent,
        conditions=conditions,
        channel=Channel.EMAIL,
        subject=email["subject"],
        message=email["message"],
        text_body=email["text_body"],
    )
    preview = None
    limit_error = ""
    wanted = None
    if not invalid:
        preview = page_selectors.audience_preview(
            project=project, conditions=conditions, kind=kind, parent=parent, channel=Channel.EMAIL
        )
        if not email["on_completion"]:
            wanted = email_recipient_estimate(
                project=project, kind=kind, parent=parent, conditions=conditions
            )
            limit_error = weekly_limit_error(brand=brand, wanted=wanted, exclude_id=exclude_id)
    return {
        "held": distribution_policy_preview(
            project=project, channel=Channel.EMAIL, kind=kind, parent=parent, conditions=conditions
        ),
        "allowance": page_selectors.email_allowance(brand=brand),
        "emails_wanted": wanted,
        "limit_error": limit_error,
        "preview": preview,
        "conditions_invalid": invalid,
        "summary_kind": kind,
        "summary_parent": parent,
        "on_completion": email["on_completion"],
        "sample": page_selectors.sample_email(distribution=draft),
    }


class ScheduleView(ScheduleFormMixin, View):
    def library_message(self, value) -> LibraryMessage | None:
        """The library message picked in the form (its text is in the form already; the
        distribution records where it came from)."""
        if not value or not str(value).isdigit():
            return None
        return self.get_scoped(LibraryMessage, pk=value)

    """Schedule a text message (invite or project-wide reminder), or a reminder of an invite
    (``?parent=<invite id>``: no recipient selection then)."""

    def get(self, request, project_pk):
        project = self.get_project(project_pk)
        parent = self.get_parent(project, request.GET.get("parent"))
        kind = request.GET.get("kind")
        kind = kind if kind in channel_kinds(self.channel) else Kind.INVITE
        initial = {"kind": Kind.REMINDER if parent else kind, "audience": "all", "when": "now"}
        if request.GET.get("audience") == Distribution.AUDIENCE_STARTED:
            initial["started_only"] = True  # the Responses tab's "who started" button
        if self.channel == Channel.EMAIL:
            initial.update(email_initial(brand=self.brand))
        form = form_class_for(self.channel)(
            zone=self.brand.zone,
            kind_fixed=Kind.REMINDER if parent else None,
            initial=initial,
        )
        return self.render_form(request, project=project, form=form, parent=parent)

    def post(self, request, project_pk):
        project = self.get_project(project_pk)
        parent = self.get_parent(project, request.POST.get("parent"))
        form = form_class_for(self.channel)(
            request.POST, zone=self.brand.zone, kind_fixed=Kind.REMINDER if parent else None
        )
        form.is_valid()  # then the conditions, so that every error shows at once
        conditions = form.clean_conditions(request.POST, with_audience=parent is None)
        if not form.errors and conditions is not None:
            data = form.cleaned_data
            extra = (
                {"trigger": data["trigger"]}
                if self.channel == Channel.EMAIL
                else {"mode": data.get("mode") or Distribution.Mode.LINK}
            )
            if reminder_audience(request.POST, data["kind"]):
                extra["audience"] = Distribution.AUDIENCE_STARTED
            try:
                distribution = distribution_create(
                    project=project,
                    actor=request.user,
                    channel=self.channel,
                    kind=data["kind"],
                    conditions=conditions,
                    send_at=data["send_at"],
                    parent=parent,
                    library_message=self.library_message(request.POST.get("library_message")),
                    **form.service_fields(),
                    **extra,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                if extra.get("trigger"):
                    messages.success(
                        request,
                        "Each participant who completes the survey will now get this email.",
                    )
                elif data["send_at"] is None:
                    messages.success(request, "Sending now. Progress is shown below.")
                else:
                    local = timezone.localtime(distribution.send_at)
                    messages.success(
                        request, f"Scheduled for {local:%Y-%m-%d %H:%M} ({self.brand.time_zone})."
                    )
                return redirect("distributions:detail", pk=distribution.pk)
        return self.render_form(request, project=project, form=form, parent=parent, status=400)


class EmailScheduleView(ScheduleView):
    """Schedule an email: invite, project-wide reminder or thank-you, or a reminder of an
    email invite (``?parent=<invite id>``)."""

    channel = Channel.EMAIL


def email_initial(*, brand) -> dict:
    """A new email starts from the brand's defaults (From name, address and Reply-To) and a
    body that has the survey and opt-out links the rules ask for."""

    account = email_account_for(brand)
    return {
        "from_name": account.default_from_name or brand.name,
        "from_address": account.default_from_address or platform_from_address(),
        "reply_to": account.default_reply_to,
        "message": DEFAULT_EMAIL_BODY,
    }


DEFAULT_EMAIL_BODY = (
    "<p>Hello ${first_name},</p>\n"
    "<p>We would value your feedback. It takes a few minutes:</p>\n"
    '<p><a href="${link}">Take the survey</a></p>\n'
    '<p style="font-size:12px;color:#666">Do not want these emails? '
    '<a href="${opt_out_link}">Unsubscribe</a>.</p>'
)


def mode_fixed(form) -> None:
    """How the survey is answered is chosen once: an edit shows it, never changes it."""
    if "mode" in form.fields:
        form.fields["mode"].disabled = True


class EditView(ScheduleFormMixin, View):
    """Edit a Scheduled distribution (the kind and the invite it follows stay)."""

    def get(self, request, pk):
        distribution = self.get_distribution(pk)
        if not distribution.is_editable:
            messages.info(
                request,
                f"This distribution is {distribution.get_status_display()}: it can no longer "
                "be edited. Here are its settings.",
            )
            return redirect("distributions:preview", pk=distribution.pk)
        local = timezone.localtime(distribution.send_at)
        initial = {
            "kind": distribution.kind,
            "name": distribution.name,
            "message": distribution.message,
            "sender": distribution.sender,
            "audience": "some" if distribution.conditions else "all",
            "when": "later",
            "send_date": local.date(),
            "send_time": local.time().replace(second=0, microsecond=0),
            "window_start": distribution.window_start,
            "window_end": distribution.window_end,
            "window_days": distribution.window_days,
            "link_expiry_days": distribution.link_expiry_days,
        }
        if distribution.is_email:
            initial.update(
                {name: getattr(distribution, name) for name in EmailScheduleForm.SERVICE_FIELDS}
            )
            initial["on_completion"] = bool(distribution.trigger)
        form = form_class_for(distribution.channel)(
            zone=self.brand.zone,
            kind_fixed=distribution.kind,
            initial={**initial, "mode": distribution.mode},
        )
        mode_fixed(form)
        form.condition_rows = condition_rows_from_conditions(distribution.conditions)
        return self.render_form(
            request,
            project=distribution.project,
            form=form,
            parent=distribution.parent,
            distribution=distribution,
        )

    def post(self, request, pk):
        distribution = self.get_distribution(pk)
        parent = distribution.parent
        form = form_class_for(distribution.channel)(
            request.POST,
            zone=self.brand.zone,
            kind_fixed=distribution.kind,
            initial={"mode": distribution.mode},
        )
        mode_fixed(form)
        form.is_valid()  # then the conditions, so that every error shows at once
        conditions = form.clean_conditions(request.POST, with_audience=parent is None)
        if not form.errors and conditions is not None:
            data = form.cleaned_data
            changes = {**form.service_fields(), "send_at": data["send_at"] or timezone.now()}
            if parent is None:
                changes["conditions"] = conditions
            try:
                distribution_update(distribution=distribution, actor=request.user, **changes)
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(
                    request, "Sending now." if data["send_at"] is None else "Distribution saved."
                )
                return redirect("distributions:detail", pk=distribution.pk)
        return self.render_form(
            request,
            project=distribution.project,
            form=form,
            parent=parent,
            distribution=distribution,
            status=400,
        )


class PreviewCountView(DistributionPageMixin, View):
    """The live summary of the schedule form (htmx): participants matching, credits, cost;
    for an email, the weekly allowance and the rendered preview."""

    def post(self, request, project_pk):
        project = self.get_project(project_pk)
        parent = self.get_parent(project, request.POST.get("parent"))
        kind = Kind.REMINDER if parent else request.POST.get("kind", Kind.INVITE)
        kind = kind if kind in channel_kinds(self.channel) else Kind.INVITE
        email = None
        if self.channel == Channel.EMAIL:
            email = email_draft_fields(request.POST)
            if kind != Kind.THANK_YOU:
                email["on_completion"] = False
        editing = request.POST.get("distribution")
        context = {
            **self.base_context(),
            **channel_pages(self.channel, project.pk),
            "project": project,
            "oob": True,
            **schedule_summary(
                brand=self.brand,
                project=project,
                kind=kind,
                parent=parent,
                audience=request.POST.get("audience"),
                reminder_audience=reminder_audience(request.POST, kind),
                rows=condition_rows_from_post(request.POST),
                message=request.POST.get("message", ""),
                mode=request.POST.get("mode", ""),
                channel=self.channel,
                email=email,
                exclude_id=int(editing) if editing and editing.isdigit() else None,
            ),
        }
        return render(request, "distributions/_schedule_summary.html", context)


# --- the distribution page -------------------------------------------------------------------
def live_context(distribution: Distribution) -> dict:
    metrics = distribution_metrics(distribution=distribution)
    distribution.stall = distribution_stalls(distributions=[distribution]).get(distribution.pk)
    return {
        "distribution": distribution,
        "metrics": metrics,
        "polling": should_poll(distribution),
        "poll_seconds": POLL_SECONDS,
        "wake_in": seconds_until_polling(distribution),
        "kind_label": kind_label(distribution),
        "audience_label": audience_label(distribution),
        "is_email": distribution.is_email,
    }


class DistributionDetailView(DistributionPageMixin, View):
    def get(self, request, pk):
        distribution = self.get_distribution(pk)
        return render_detail(self, request, distribution, DownloadHistoryForm())


def render_detail(view, request, distribution, download_form, *, status=200):
    """The distribution page (also answers an invalid download request, with its errors)."""
    wanted = request.GET.get("status") or ""
    wanted = wanted if wanted in Message.Status.values else ""
    live = live_context(distribution)
    by_status = live["metrics"]["by_status"]
    history = Paginator(
        page_selectors.history_page_queryset(distribution=distribution, status=wanted),
        HISTORY_PAGE_SIZE,
    ).get_page(request.GET.get("page"))
    return render(
        request,
        "distributions/detail.html",
        {
            **view.base_context(),
            **channel_pages(distribution.channel, distribution.project_id),
            **live,
            "project": distribution.project,
            "related": related_distributions(distribution=distribution).select_related("parent"),
            "history": history,
            "page": history,
            "status_filter": wanted,
            "status_counts": [
                (value, label, by_status.get(value, 0))
                for value, label in Message.Status.choices
                if by_status.get(value)
            ],
            "download_form": download_form,
            "can_download": distribution.status != Status.SCHEDULED,
            **everyday_context(request, distribution),
        },
        status=status,
    )


def everyday_context(request, distribution: Distribution) -> dict:
    """The distribution page's copy, try again, resend, test, delete and archive parts."""
    participants = Participant.objects.filter(project_id=distribution.project_id)
    return {
        "retry_advice": retry_advice(distribution) if distribution.status == Status.FAILED else "",
        "resend_count": resend_recipient_count(original=distribution)
        if distribution.status == Status.SENT
        else 0,
        "test_messages": test_messages(distribution=distribution)[:TEST_MESSAGES_SHOWN],
        "test_participants": participants.select_related("person").order_by("pk")[
            :TEST_PARTICIPANTS_SHOWN
        ],
        "test_address": request.user.email if distribution.is_email else "",
        "audit": distribution_audit_list(
            brand=distribution.project.brand, distribution_id=distribution.pk
        )[:AUDIT_SHOWN],
        "derivable": distribution.kind != Kind.TRANSACTIONAL and not distribution.is_test,
    }


class LiveView(DistributionPageMixin, View):
    """The live part of the distribution page (htmx polls it every 2 s while it runs)."""

    def get(self, request, pk):
        distribution = self.get_distribution(pk)
        context = {**self.base_context(), **live_context(distribution)}
        response = render(request, "distributions/_live.html", context)
        if distribution.is_finished and request.headers.get("HX-Request"):
            # The run ended while the page watched it: reload once so that the recipient
            # history and related distributions show the final state (no more polling).
            response["HX-Refresh"] = "true"
        return response


class PreviewView(DistributionPageMixin, View):
    """Read-only settings and a sample message for one recipient."""

    def get(self, request, pk):
        distribution = self.get_distribution(pk)
        if distribution.is_email:
            sample = page_selectors.sample_email(distribution=distribution)
            sample_info = None
        else:
            sample = page_selectors.sample_message(distribution=distribution)
            sample_info = segment_info(sample.body) if sample else None
        return render(
            request,
            "distributions/preview.html",
            {
                **self.base_context(),
                **channel_pages(distribution.channel, distribution.project_id),
                "distribution": distribution,
                "project": distribution.project,
                "kind_label": kind_label(distribution),
                "audience_label": audience_label(distribution),
                "conditions": [
                    (
                        CRITERION_LABELS.get(c["criterion"], c["criterion"]),
                        c.get("field", ""),
                        OPERATOR_LABELS.get(c["operator"], c["operator"]),
                        c.get("value", ""),
                    )
                    for c in distribution.conditions or []
                ],
                "sample": sample,
                "sample_info": sample_info,
            },
        )


class CancelView(DistributionPageMixin, View):
    """Cancel a scheduled distribution, or stop one in progress."""

    def post(self, request, pk):
        distribution = self.get_distribution(pk)
        was = distribution.status
        try:
            distribution = distribution_cancel(distribution=distribution, actor=request.user)
        except ValidationError as exc:
            for error in exc.messages:
                messages.error(request, error)
        else:
            if was == Status.IN_PROGRESS:
                messages.success(request, f"Sending stopped. {distribution.status_reason}")
            else:
                messages.success(request, "Distribution cancelled: nothing will be sent.")
        return redirect("distributions:detail", pk=distribution.pk)


class HistoryCsvView(DistributionPageMixin, View):
    """Download history: the columns of docs/api.md, with the chosen delimiter and field
    enclosure."""

    def get(self, request, pk):
        distribution = self.get_distribution(pk)
        form = DownloadHistoryForm(
            {
                "delimiter": request.GET.get("delimiter", "comma"),
                "enclosure": request.GET.get("enclosure", "double"),
            }
        )
        if not form.is_valid():
            return render_detail(self, request, distribution, form, status=400)
        return history_csv_response(
            distribution=distribution,
            zone=self.brand.zone,
            delimiter=form.cleaned_data["delimiter"],
            enclosure=form.cleaned_data["enclosure"],
        )


# --- brand-wide pages ------------------------------------------------------------------------
class BrandDistributionsView(DistributionPageMixin, View):
    """Every distribution of the brand: search, filters and sorting kept in the URL (so a
    filtered list can be bookmarked or shared), paginated."""

    def get(self, request):
        form = DistributionFilterForm(
            request.GET or None,
            projects=self.scoped(Project.objects.all()).order_by("name"),
            creators=brand_creators(self.brand),
        )
        filters = form.filters() if form.is_bound else DistributionFilters()
        queryset = page_selectors.with_counts(distribution_list(brand=self.brand, filters=filters))
        page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
        page.object_list = page_selectors.with_stalls(page.object_list)
        return render(
            request,
            "distributions/list.html",
            {
                **self.base_context(),
                "page": page,
                "form": form,
                "filtered": filters.active,
                "archived": filters.archived,
            },
        )


def brand_creators(brand) -> list[tuple[int, str]]:
    """The brand's members, for the "Created by" filter."""
    return [
        (membership.user_id, membership.user.get_full_name() or membership.user.get_username())
        for membership in brand.memberships.select_related("user").order_by("user__username")
    ]


class OutboxView(DistributionPageMixin, View):
    """What the outbox provider stored for this brand, as a phone would show it."""

    def get(self, request):

        number = (request.GET.get("number") or "").strip()[:32]
        numbers = page_selectors.outbox_numbers(brand=self.brand, number=number)
        page = Paginator(numbers, OUTBOX_THREADS_PER_PAGE).get_page(request.GET.get("page"))
        account = provider_account_for(self.brand)
        return render(
            request,
            "distributions/outbox.html",
            {
                **self.base_context(),
                "page": page,
                "threads": page_selectors.outbox_threads(
                    brand=self.brand, numbers=list(page.object_list)
                ),
                "number": number,
                "uses_outbox": account.provider == "outbox",
                "provider": account.provider,
                "thread_limit": page_selectors.OUTBOX_THREAD_MESSAGES,
                "projects_url": reverse("projects:list"),
            },
        )
