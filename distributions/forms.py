"""Forms of the distribution pages: translate what the browser posts into service arguments.

Times are typed in the brand's time zone (a date and a time) and converted to an aware
datetime here; the conditions builder posts parallel lists (``c_criterion``, ``c_field``,
``c_operator``, ``c_value``: one item per row, in order) and is validated row by row so that
each error can be shown next to its row. The services validate everything again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from dataclasses import field as dc_field
from itertools import zip_longest

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from core.csvio import DELIMITERS, ENCLOSURES
from credits.segments import normalize_line_breaks
from distributions.conditions import CRITERION_LABELS, ONCE_PER_SET, conditions_clean
from distributions.email_services import MAX_EMAIL_LENGTH, MAX_SUBJECT_LENGTH
from distributions.models import Distribution, DistributionSeries
from distributions.policies import WEEKDAY_NAMES
from distributions.spec import MAX_MESSAGE_LENGTH

CONDITION_KEYS = ("criterion", "field", "operator", "value")
MAX_CONDITIONS = 50


class MessageField(forms.CharField):
    """Message text with its line breaks as LF before any check: browsers submit CR LF, but
    count LF in the textarea's maxlength and in the live counter (credits.segments)."""

    def to_python(self, value):
        value = super().to_python(value)
        return normalize_line_breaks(value) if isinstance(value, str) else value


ONCE_PER_SET_HELP = (
    "Name or email, First name and Last name can each be used only once in a condition set."
)


def aware_in_zone(day: dt.date, at: dt.time, zone) -> dt.datetime:
    """``day`` ``at`` on the wall clock of ``zone``; refuses a time the clocks skip."""
    naive = dt.datetime.combine(day, at.replace(second=0, microsecond=0))
    aware = naive.replace(tzinfo=zone)
    if aware.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise ValidationError(
            f"{naive:%Y-%m-%d %H:%M} does not exist in {zone.key}: the clocks go forward "
            "at that time. Choose another time."
        )
    return aware


# --- conditions builder ---------------------------------------------------------------------
@dataclass
class ConditionRow:
    criterion: str = ""
    field: str = ""
    operator: str = "is"
    value: str = ""
    errors: list[str] = dc_field(default_factory=list)

    def as_condition(self) -> dict:
        condition = {"criterion": self.criterion, "operator": self.operator, "value": self.value}
        if self.criterion == "metadata":
            condition["field"] = self.field
        return condition


def condition_rows_from_post(data) -> list[ConditionRow]:
    """The builder's rows, in order; rows left entirely blank are dropped."""
    columns = [data.getlist(f"c_{key}") for key in CONDITION_KEYS]
    rows = []
    for criterion, field_name, operator, value in zip_longest(*columns, fillvalue=""):
        row = ConditionRow(
            criterion=(criterion or "").strip(),
            field=(field_name or "").strip(),
            operator=(operator or "is").strip() or "is",
            value=(value or "").strip(),
        )
        if not row.criterion and not row.field and not row.value:
            continue
        rows.append(row)
    return rows


def condition_rows_from_conditions(conditions: list[dict]) -> list[ConditionRow]:
    return [
        ConditionRow(
            criterion=c.get("criterion", ""),
            field=c.get("field", ""),
            operator=c.get("operator", "is"),
            value=c.get("value", ""),
        )
        for c in conditions or []
    ]


def condition_rows_validate(rows: list[ConditionRow]) -> bool:
    """Attach each row's errors to it (the service's own messages, without the row number)
    and enforce the once-per-set rule with an explanation. True when every row is valid."""
    seen: dict[str, int] = {}
    valid = True
    if len(rows) > MAX_CONDITIONS:
        rows[-1].errors.append(f"At most {MAX_CONDITIONS} conditions.")
        return False
    for index, row in enumerate(rows, start=1):
        if not row.criterion:
            row.errors.append("Choose what this condition is about.")
        else:
            try:
                conditions_clean([row.as_condition()])
            except ValidationError as exc:
                for message in exc.messages:
                    message = message.removeprefix("Condition 1: ")
                    row.errors.append(message[:1].upper() + message[1:])
        if row.criterion in ONCE_PER_SET:
            if row.criterion in seen:
                label = CRITERION_LABELS[row.criterion]
                row.errors.append(
                    f"{label} is already used by condition {seen[row.criterion]}: "
                    f"{ONCE_PER_SET_HELP} Remove this row or choose another criterion."
                )
            else:
                seen[row.criterion] = index
        valid = valid and not row.errors
    return valid


# --- the schedule form ----------------------------------------------------------------------
class ScheduleForm(forms.Form):
    """Create or edit an SMS distribution. ``cleaned_data['send_at']`` is None for "now"."""

    KIND_CHOICES = [
        (Distribution.Kind.INVITE, "Invite"),
        (Distribution.Kind.REMINDER, "Reminder to everyone who has not responded"),
    ]
    AUDIENCE_CHOICES = [
        ("all", "All participants"),
        ("some", "Only participants who meet conditions"),
    ]
    WHEN_CHOICES = [("now", "Send now"), ("later", "Schedule for later")]

    kind = forms.ChoiceField(choices=KIND_CHOICES, widget=forms.RadioSelect, initial="invite")
    name = forms.CharField(
        required=False,
        max_length=200,
        label="Name (optional)",
        help_text="Shown in the distribution list; the message excerpt is used when empty.",
    )
    message = MessageField(
        max_length=MAX_MESSAGE_LENGTH,
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "true"}),
    )
    sender = forms.CharField(
        required=False,
        max_length=32,
        label="Sender (optional)",
        help_text="A phone number, short code or alphanumeric sender ID; empty uses the "
        "brand's default sender.",
    )
    mode = forms.ChoiceField(
        choices=Distribution.Mode.choices,
        widget=forms.RadioSelect,
        initial=Distribution.Mode.LINK,
        required=False,
        label="How the survey is answered",
        help_text="Two-way: each question is sent as a text and answered by reply.",
    )
    audience = forms.ChoiceField(
        choices=AUDIENCE_CHOICES, widget=forms.RadioSelect, initial="all", required=False
    )
    started_only = forms.BooleanField(
        required=False,
        label="Only participants who started the survey and did not finish it",
        help_text="Reminders only: those who saved their answers to finish later (or whose "
        "partial answers were kept) and have not submitted.",
    )
    when = forms.ChoiceField(choices=WHEN_CHOICES, widget=forms.RadioSelect, initial="now")
    send_date = forms.DateField(
        required=False, label="Date", widget=forms.DateInput(attrs={"type": "date"})
    )
    send_time = forms.TimeField(
        required=False,
        label="Time",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    # Send window (docs/policies.md): recipient local hours and days; empty: any time.
    window_start = forms.TimeField(
        required=False,
        label="Send window from",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    window_end = forms.TimeField(
        required=False,
        label="until",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    window_days = forms.TypedMultipleChoiceField(
        required=False,
        coerce=int,
        label="on",
        choices=[(index, name[:3]) for index, name in enumerate(WEEKDAY_NAMES)],
        widget=forms.CheckboxSelectMultiple,
        help_text="Recipients' local time. No day ticked: every day.",
    )

    link_expiry_days = forms.IntegerField(
        required=False,
        min_value=1,
        label="Links expire after (days)",
        help_text="Empty: the project's setting. Reminders share their invite's links.",
    )

    def __init__(self, *args, zone, kind_fixed: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.zone = zone
        self.kind_fixed = kind_fixed
        if kind_fixed:
            self.fields["kind"].required = False
        self.condition_rows: list[ConditionRow] = []

    def clean_kind(self):
        return self.kind_fixed or self.cleaned_data.get("kind")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("when") == "later":
            day, at = cleaned.get("send_date"), cleaned.get("send_time")
            if day is None and "send_date" not in self.errors:
                self.add_error("send_date", "Choose the date to send on.")
            if at is None and "send_time" not in self.errors:
                self.add_error("send_time", "Choose the time to send at.")
            if day is not None and at is not None:
                try:
                    send_at = aware_in_zone(day, at, self.zone)
                except ValidationError as exc:
                    self.add_error("send_time", exc)
                else:
                    if send_at <= timezone.now():
                        self.add_error(
                            "send_time",
                            "That time has already passed. Choose a later time, or Send now.",
                        )
                    cleaned["send_at"] = send_at
        else:
            cleaned["send_at"] = None
        return cleaned

    def service_fields(self) -> dict:
        """The content arguments of ``distribution_create`` / ``distribution_update``."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "message": data["message"],
            "sender": data["sender"],
            **self.window_fields(),
        }

    def window_fields(self) -> dict:
        data = self.cleaned_data
        return {name: data.get(name) for name in ("window_start", "window_end")} | {
            "window_days": data.get("window_days") or [],
            "link_expiry_days": data.get("link_expiry_days"),
        }

    def clean_conditions(self, data, *, with_audience: bool) -> list | None:
        """Parse and validate the builder's rows; None when some row is wrong."""
        self.condition_rows = condition_rows_from_post(data)
        if not with_audience or getattr(self, "cleaned_data", {}).get("audience") != "some":
            return []
        if not self.condition_rows:
            self.add_error(
                "audience", "Add at least one condition, or choose to send to all participants."
            )
            return None
        if not condition_rows_validate(self.condition_rows):
            self.add_error("audience", "Some conditions need your attention (see below).")
            return None
        return [row.as_condition() for row in self.condition_rows]


class EmailScheduleForm(ScheduleForm):
    """Create or edit an email distribution: the SMS form without a sender, with a subject,
    From, Reply-To, an HTML body and an optional plain-text part, and thank-you messages that
    can go when a recipient completes the survey. The service sanitises and checks them."""

    KIND_CHOICES = [
        (Distribution.Kind.INVITE, "Invite"),
        (Distribution.Kind.REMINDER, "Reminder to everyone who has not responded"),
        (Distribution.Kind.THANK_YOU, "Thank-you message"),
    ]
    SERVICE_FIELDS = ("subject", "from_name", "from_address", "reply_to", "text_body")

    kind = forms.ChoiceField(choices=KIND_CHOICES, widget=forms.RadioSelect, initial="invite")
    sender = None
    mode = None
    subject = forms.CharField(
        max_length=MAX_SUBJECT_LENGTH,
        widget=forms.TextInput(attrs={"data-pipe-target": "", "autocomplete": "off"}),
    )
    from_name = forms.CharField(required=False, max_length=100, label="From name")
    from_address = forms.EmailField(
        required=False,
        label="From address",
        widget=forms.EmailInput(attrs={"list": "from-addresses", "autocomplete": "off"}),
    )
    reply_to = forms.EmailField(required=False, label="Reply-To (optional)")
    message = MessageField(
        label="HTML body",
        max_length=MAX_EMAIL_LENGTH,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "true", "data-pipe-target": ""}),
    )
    text_body = MessageField(
        required=False,
        max_length=MAX_EMAIL_LENGTH,
        label="Plain-text part (optional)",
        help_text="Shown by mail programs that do not display HTML; generated from the HTML "
        "body when empty.",
        widget=forms.Textarea(attrs={"rows": 5, "data-pipe-target": ""}),
    )
    on_completion = forms.BooleanField(
        required=False,
        label="Send to each participant when they complete the survey",
        help_text="From now until you stop it, instead of once at a time.",
    )

    field_order = [
        "kind",
        "name",
        "subject",
        "from_name",
        "from_address",
        "reply_to",
        "message",
        "text_body",
        "audience",
        "when",
        "on_completion",
        "send_date",
        "send_time",
    ]

    def clean(self):
        if (
            self.cleaned_data.get("on_completion")
            and self.cleaned_data.get("kind") == Distribution.Kind.THANK_YOU
        ):
            self.cleaned_data["when"] = "now"  # goes on each completion: no send time
        cleaned = super().clean()
        cleaned["trigger"] = (
            Distribution.TRIGGER_COMPLETION
            if cleaned.get("on_completion") and cleaned.get("kind") == Distribution.Kind.THANK_YOU
            else ""
        )
        return cleaned

    def service_fields(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "message": data["message"],
            **{name: data.get(name) or "" for name in self.SERVICE_FIELDS},
            **self.window_fields(),
        }


class BulkEditForm(forms.Form):
    """New send time and/or message for several scheduled distributions."""

    send_date = forms.DateField(
        required=False, label="New date", widget=forms.DateInput(attrs={"type": "date"})
    )
    send_time = forms.TimeField(
        required=False,
        label="New time",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    message = MessageField(
        required=False,
        max_length=MAX_MESSAGE_LENGTH,
        label="New message (optional)",
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def __init__(self, *args, zone, **kwargs):
        super().__init__(*args, **kwargs)
        self.zone = zone

    def clean(self):
        cleaned = super().clean()
        day, at = cleaned.get("send_date"), cleaned.get("send_time")
        changes = {}
        if day is not None or at is not None:
            if day is None or at is None:
                self.add_error(
                    "send_time" if at is None else "send_date",
                    "Give both a date and a time to change the send time.",
                )
            else:
                try:
                    send_at = aware_in_zone(day, at, self.zone)
                except ValidationError as exc:
                    self.add_error("send_time", exc)
                else:
                    if send_at <= timezone.now():
                        self.add_error("send_time", "That time has already passed.")
                    changes["send_at"] = send_at
        if (cleaned.get("message") or "").strip():
            changes["message"] = cleaned["message"].strip()
        if not changes and not self.errors:
            raise ValidationError("Choose a new send time or type a new message.")
        cleaned["changes"] = changes
        return cleaned


DELIMITER_LABELS = {
    "comma": "Comma (,)",
    "semicolon": "Semicolon (;)",
    "tab": "Tab",
    "pipe": "Pipe (|)",
}
ENCLOSURE_LABELS = {"double": 'Double quote (")', "single": "Single quote (')", "none": "None"}


class DownloadHistoryForm(forms.Form):
    delimiter = forms.ChoiceField(
        choices=[(key, DELIMITER_LABELS.get(key, key)) for key in DELIMITERS], initial="comma"
    )
    enclosure = forms.ChoiceField(
        choices=[(key, ENCLOSURE_LABELS.get(key, key)) for key in ENCLOSURES],
        initial="double",
        label="Field enclosure",
    )


WEEKDAYS = [
    (0, "Monday"),
    (1, "Tuesday"),
    (2, "Wednesday"),
    (3, "Thursday"),
    (4, "Friday"),
    (5, "Saturday"),
    (6, "Sunday"),
]


class ResumeForm(forms.Form):
    resend_missed = forms.BooleanField(
        required=False,
        initial=True,
        label="Send now the distributions that were due while the project was paused",
    )


class SeriesForm(forms.Form):
    name = forms.CharField(max_length=200, required=False)
    message = MessageField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=1600,
        help_text="Piped fields work as in any text message: ${first_name}, ${link}…",
    )
    frequency = forms.ChoiceField(choices=DistributionSeries.Frequency.choices)
    weekdays = forms.TypedMultipleChoiceField(
        choices=WEEKDAYS,
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Days (weekly)",
    )
    day_of_month = forms.IntegerField(
        required=False, min_value=1, max_value=31, label="Day of the month (monthly)"
    )
    time_of_day = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}))
    starts_on = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    ends_on = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    sender = forms.CharField(max_length=32, required=False)


class FrequencyRuleForm(forms.Form):
    """A contact frequency rule on the brand settings page (docs/policies.md)."""

    name = forms.CharField(max_length=100)
    project = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, label="Project (empty: every project)"
    )
    channel = forms.ChoiceField(
        required=False, choices=[("", "All channels"), *Distribution.Channel.choices]
    )
    max_messages = forms.IntegerField(required=False, label="At most (messages)")
    period_days = forms.IntegerField(initial=7, label="per (days)")
    min_gap_hours = forms.IntegerField(initial=0, label="At least (hours between two)")
    role = forms.CharField(required=False, max_length=120, label="Only for the role")
    metadata_field = forms.CharField(required=False, max_length=100, label="Only where field")
    metadata_value = forms.CharField(required=False, max_length=200, label="is")
    count_reminders = forms.BooleanField(required=False, label="Count reminders")
    count_thank_you = forms.BooleanField(required=False, label="Count thank-you messages")
    count_transactional = forms.BooleanField(required=False, label="Count transactional links")

    def __init__(self, *args, projects, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].choices = [("", "—"), *((p.pk, p.name) for p in projects)]

    def rule_fields(self, projects) -> dict:
        """The arguments of ``policies.frequency_rule_save``."""
        data = dict(self.cleaned_data)
        conditions = []
        if data.pop("role"):
            conditions.append(
                {"criterion": "role", "operator": "is", "value": self.cleaned_data["role"]}
            )
        field, value = data.pop("metadata_field"), data.pop("metadata_value")
        if field:
            conditions.append(
                {"criterion": "metadata", "field": field, "operator": "is", "value": value}
            )
        data["conditions"] = conditions
        data["project"] = next((p for p in projects if p.pk == data["project"]), None)
        return data
