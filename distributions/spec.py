"""One distribution spec: what a distribution sends, to whom, from whom, checked by one set of
rules whichever path makes it (docs/architecture.md).

A ``DistributionSpec`` holds the channel, kind, parent invite, message, email fields (subject,
text body, From name and address, Reply-To), sender, conditions, completion trigger and a
reminder's audience (who have not responded, or who started but did not finish) and the mode
(a link to the survey, the survey asked by text, a consent request: ``two_way_errors``).
``spec_clean`` normalises it (line breaks, the email defaults of the brand and the platform,
conditions); ``spec_errors`` lists every broken rule by field. Create, edit, a recurring series
and its runs, the resend of distributions missed while a project was paused, a copy, a try
again, a resend to failed recipients and a test message (``distributions.copies``) all go
through these two, so a rule added here holds on every path; a spec taken from a stored
distribution or series (``DistributionSpec.of``) carries every field, the email ones included.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, time

from brands.models import Brand
from credits.segments import normalize_line_breaks
from distributions.conditions import conditions_clean
from distributions.email_services import (
    email_content_errors,
    email_fields_clean,
    email_sending_errors,
    from_domain_errors,
)
from distributions.models import Distribution
from distributions.policies import quiet_hours_for, rule_errors
from optouts.links import is_alphanumeric_sender
from optouts.models import ConsentPolicy
from participants.rendering import piped_fields
from projects.models import Project
from surveys.sms import sms_invite_text, sms_unsupported_errors

MAX_MESSAGE_LENGTH = 1600  # Twilio's limit for one message body
EMAIL_FIELDS = ("subject", "text_body", "from_name", "from_address", "reply_to")
INACTIVE_PROJECT_MESSAGE = (
    "Your project must be activated to send text messages: this project is {stage}."
)
ALPHANUMERIC_SENDER_MESSAGE = (
    "Messages from an alphanumeric sender cannot receive STOP replies: include "
    "${opt_out_link} so that recipients can opt out."
)


@dataclass(frozen=True)
class DistributionSpec:
    channel: str = Distribution.Channel.SMS
    kind: str = Distribution.Kind.INVITE
    message: str = ""
    sender: str = ""
    parent: Distribution | None = None
    conditions: list = field(default_factory=list)
    trigger: str = ""
    audience: str = ""
    subject: str = ""
    text_body: str = ""
    from_name: str = ""
    from_address: str = ""
    reply_to: str = ""
    # Send window in the recipient's local time (distributions.policies).
    window_start: time | None = None
    window_end: time | None = None
    window_days: list = field(default_factory=list)
    # Days its personal links stay valid (None: the project's setting).
    link_expiry_days: int | None = None
    mode: str = Distribution.Mode.LINK

    @classmethod
    def of(cls, source, **changes) -> DistributionSpec:
        """The spec of a stored ``Distribution`` or ``DistributionSeries`` (a series has no
        kind, parent or trigger: its runs are invites), with ``changes`` applied."""
        values = {
            spec_field.name: getattr(source, spec_field.name)
            for spec_field in dataclasses.fields(cls)
            if hasattr(source, spec_field.name)
        }
        values.update(changes)
        return cls(**values)

    @property
    def is_email(self) -> bool:
        return self.channel == Distribution.Channel.EMAIL

    @property
    def email(self) -> dict[str, str]:
        """The email fields (empty for SMS)."""
        return {name: getattr(self, name) for name in EMAIL_FIELDS} if self.is_email else {}

    def stored_fields(self, *, with_window: bool = True) -> dict:
        """The model fields this spec sets (the email ones only for an email; the send window
        and link expiry unless ``with_window`` is False: a series has neither)."""
        stored = {
            "channel": self.channel,
            "message": self.message,
            "sender": self.sender,
            "conditions": self.conditions,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "window_days": sorted(set(self.window_days or [])),
            "link_expiry_days": self.link_expiry_days,
        }
        if not with_window:
            stored = {
                k: v
                for k, v in stored.items()
                if not k.startswith("window_") and k != "link_expiry_days"
            }
        if self.mode != Distribution.Mode.LINK:  # a series has no mode: its runs send links
            stored["mode"] = self.mode
        return {**stored, **self.email}


def spec_clean(spec: DistributionSpec, *, brand: Brand) -> DistributionSpec:
    """The spec as it is stored: line breaks as LF, blanks trimmed, conditions checked
    (ValidationError), an email's HTML sanitised and its From/Reply-To defaults filled in
    (the brand's email settings, else the platform's); an email has no sender."""
    message = normalize_line_breaks(spec.message or "")
    changes: dict = {
        "sender": (spec.sender or "").strip(),
        "conditions": conditions_clean(spec.conditions),
        "trigger": spec.trigger or "",
        "mode": spec.mode or Distribution.Mode.LINK,
        "audience": (spec.audience or "").strip(),
    }
    if spec.is_email:
        message, email = email_fields_clean(
            brand=brand,
            message=message,
            subject=spec.subject,
            text_body=spec.text_body,
            from_name=spec.from_name,
            from_address=spec.from_address,
            reply_to=spec.reply_to,
        )
        changes.update(email, sender="")
    changes["message"] = message.strip()
    return dataclasses.replace(spec, **changes)


def schedule_errors(*, project: Project, send_at: datetime) -> dict[str, str]:
    """A send at ``send_at``: only an active project, inside its availability window."""
    if project.stage != Project.Stage.ACTIVE:
        return {"project": INACTIVE_PROJECT_MESSAGE.format(stage=project.get_stage_display())}
    if not project.is_within_availability(send_at):
        return {"send_at": "The project is outside its availability window at that time."}
    return {}


def spec_errors(
    spec: DistributionSpec,
    *,
    project: Project,
    recurring: bool = False,
    exclude_id: int | None = None,
) -> dict[str, str]:
    """Every rule a (cleaned) spec breaks, by field. ``recurring``: the spec of a series,
    whose email From domain is checked now and whose weekly limit each run checks."""
    errors: dict[str, str] = {}
    if spec.channel not in Distribution.Channel.values:
        errors["channel"] = f"Unknown channel '{spec.channel}'."
    if spec.kind not in Distribution.Kind.values:
        errors["kind"] = f"Unknown kind '{spec.kind}'."
    if spec.trigger and not spec.is_email:
        errors["trigger"] = "Only email thank-you messages can be triggered."
    if spec.audience:
        if spec.audience != Distribution.AUDIENCE_STARTED:
            errors["audience"] = (
                f"Unknown audience '{spec.audience}': leave it empty (who have not responded) "
                f"or choose '{Distribution.AUDIENCE_STARTED}' (who started but did not finish)."
            )
        elif spec.kind != Distribution.Kind.REMINDER:
            errors["audience"] = "Only a reminder targets who started but did not finish."
    text = spec.message
    if not text:
        errors["message"] = "The message is empty."
    elif spec.is_email:
        errors.update(
            email_content_errors(kind=spec.kind, message=text, trigger=spec.trigger, **spec.email)
        )
        if not errors and recurring:
            errors.update(from_domain_errors(project=project, from_address=spec.from_address))
        elif not errors:
            errors.update(
                email_sending_errors(
                    project=project,
                    kind=spec.kind,
                    parent=spec.parent,
                    conditions=spec.conditions,
                    trigger=spec.trigger,
                    from_address=spec.from_address,
                    exclude_id=exclude_id,
                )
            )
    elif len(text) > MAX_MESSAGE_LENGTH:
        errors["message"] = f"The message is longer than {MAX_MESSAGE_LENGTH} characters."
    elif (
        spec.channel == Distribution.Channel.SMS
        and spec.mode == Distribution.Mode.LINK
        and is_alphanumeric_sender(spec.sender)
        and "opt_out_link" not in piped_fields(text)
    ):
        errors["message"] = ALPHANUMERIC_SENDER_MESSAGE
    errors.update(
        rule_errors(
            quiet=quiet_hours_for(project, spec.channel),
            window=(spec.window_start, spec.window_end)
            if spec.window_start or spec.window_end
            else None,
            days=spec.window_days,
        )
    )
    if spec.link_expiry_days is not None and spec.link_expiry_days < 1:
        errors["link_expiry_days"] = "Links stay valid at least 1 day (empty: the project's)."
    if spec.mode not in Distribution.Mode.values:
        errors["mode"] = f"Unknown mode '{spec.mode}'."
    elif spec.mode == Distribution.Mode.TWO_WAY and text:
        for name, error in two_way_errors(spec, project=project).items():
            errors.setdefault(name, error)
    elif spec.mode == Distribution.Mode.CONSENT and text:
        for name, error in consent_request_errors(spec, project=project).items():
            errors.setdefault(name, error)
    parent = spec.parent
    if parent is not None:
        if parent.project_id != project.pk:
            errors["parent"] = "The invite belongs to another project."
        elif parent.kind != Distribution.Kind.INVITE:
            errors["parent"] = "A reminder follows an invite."
        elif spec.kind != Distribution.Kind.REMINDER:
            errors["parent"] = "Only a reminder can follow an invite."
    return errors


TWO_WAY_KINDS = (Distribution.Kind.INVITE, Distribution.Kind.REMINDER)


def two_way_errors(spec: DistributionSpec, *, project: Project) -> dict[str, str]:
    """A two-way distribution (docs/two-way.md): an SMS invite or reminder, from a sender
    that can receive replies, of a survey whose every question can be asked by text (the
    others are named), whose first text (message, first question, opt-out line) fits."""
    if spec.channel != Distribution.Channel.SMS:
        return {"mode": "Only SMS distributions can be two-way."}
    if spec.kind not in TWO_WAY_KINDS:
        return {"mode": "Only invites and reminders can be two-way."}
    if is_alphanumeric_sender(spec.sender):
        return {"sender": "An alphanumeric sender cannot receive replies: choose a number."}
    questions = list(project.questions.all())
    unsupported = sms_unsupported_errors(questions)
    if unsupported:
        return {"mode": unsupported}
    if len(sms_invite_text(spec.message, questions)) > MAX_MESSAGE_LENGTH:
        return {
            "message": f"With the first question, the text is longer than "
            f"{MAX_MESSAGE_LENGTH} characters."
        }
    return {}


def consent_request_errors(spec: DistributionSpec, *, project: Project) -> dict[str, str]:
    """A consent request: an SMS invite, from a number that can receive the YES, of a project
    that requires consent (docs/two-way.md)."""
    if spec.channel != Distribution.Channel.SMS or spec.kind != Distribution.Kind.INVITE:
        return {"mode": "A consent request is an SMS invite."}
    if is_alphanumeric_sender(spec.sender):
        return {"sender": "An alphanumeric sender cannot receive replies: choose a number."}
    if not ConsentPolicy.objects.filter(project=project, required=True).exists():
        return {"mode": "This project does not require consent: turn it on first."}
    return {}
