"""Forms of the everyday distribution pages: copy, test message, the distribution list's
filters and the message library."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from distributions.forms import aware_in_zone
from distributions.models import Distribution, LibraryMessage
from distributions.selectors import DEFAULT_ORDERING, DistributionFilters

ORDERING_CHOICES = [
    ("-send_at", "Send time, newest first"),
    ("send_at", "Send time, oldest first"),
    ("-created_at", "Created, newest first"),
    ("created_at", "Created, oldest first"),
    ("name", "Name, A to Z"),
    ("-name", "Name, Z to A"),
    ("status", "Status"),
]
ARCHIVED_CHOICES = [("", "Not archived"), ("true", "Archived")]


class CopyForm(forms.Form):
    """Where and when a copy goes: a project of the brand, a date and time in its zone."""

    project = forms.ModelChoiceField(queryset=None, empty_label=None)
    name = forms.CharField(required=False, max_length=200, label="Name (optional)")
    send_date = forms.DateField(label="Date", widget=forms.DateInput(attrs={"type": "date"}))
    send_time = forms.TimeField(
        label="Time", widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M")
    )

    def __init__(self, *args, projects, zone, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects
        self.zone = zone

    def clean(self):
        cleaned = super().clean()
        day, at = cleaned.get("send_date"), cleaned.get("send_time")
        if day is not None and at is not None:
            try:
                cleaned["send_at"] = aware_in_zone(day, at, self.zone)
            except ValidationError as exc:
                self.add_error("send_time", exc)
            else:
                if cleaned["send_at"] <= timezone.now():
                    self.add_error("send_time", "A copy is scheduled: choose a later time.")
        return cleaned


class TestMessageForm(forms.Form):
    address = forms.CharField(max_length=254, label="Send the test to")
    participant = forms.ModelChoiceField(
        queryset=None, label="Rendered with the fields of", empty_label=None
    )

    def __init__(self, *args, participants, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["participant"].queryset = participants


class DistributionFilterForm(forms.Form):
    """The list's filters, read from the URL (a bad value is ignored, not an error)."""

    search = forms.CharField(required=False, max_length=200, label="Search")
    project = forms.ModelChoiceField(queryset=None, required=False, empty_label="Any project")
    channel = forms.ChoiceField(
        required=False, choices=[("", "Any channel"), *Distribution.Channel.choices]
    )
    kind = forms.ChoiceField(
        required=False, label="Type", choices=[("", "Any type"), *Distribution.Kind.choices]
    )
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *Distribution.Status.choices]
    )
    created_by = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, label="Created by"
    )
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    archived = forms.ChoiceField(required=False, choices=ARCHIVED_CHOICES, label="Archive")
    ordering = forms.ChoiceField(required=False, choices=ORDERING_CHOICES, label="Sort by")

    def __init__(self, *args, projects, creators, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects
        self.fields["created_by"].choices = [("", "Anyone"), *creators]

    def filters(self) -> DistributionFilters:
        """The valid filters (an invalid field is dropped, the others still apply)."""
        self.is_valid()
        data = {
            name: value
            for name, value in getattr(self, "cleaned_data", {}).items()
            if name not in self.errors
        }
        project = data.get("project")
        return DistributionFilters(
            search=(data.get("search") or "").strip(),
            project=project.pk if project else None,
            channel=data.get("channel") or "",
            kind=data.get("kind") or "",
            status=data.get("status") or "",
            created_by=data.get("created_by"),
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            archived=data.get("archived") == "true",
            ordering=data.get("ordering") or DEFAULT_ORDERING,
        )


class LibraryMessageForm(forms.Form):
    name = forms.CharField(max_length=200)
    channel = forms.ChoiceField(choices=Distribution.Channel.choices, initial="sms")
    type = forms.ChoiceField(choices=LibraryMessage.Type.choices, initial="invite")
    subject = forms.CharField(
        required=False, max_length=300, help_text="Email only: the subject line."
    )
    message = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="SMS: the text, with piped fields such as ${first_name} and ${link}. Email: "
        "the HTML body.",
    )
