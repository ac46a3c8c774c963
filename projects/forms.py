from __future__ import annotations

from django import forms

from projects.models import Project
from projects.services import POLICY_FIELDS


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = [
            "name",
            "kind",
            "available_from",
            "available_until",
            "default_country",
            *POLICY_FIELDS,
            "closed_message",
        ]
        labels = {"closed_message": "Closed-survey message (optional)"}
        help_texts = {
            "closed_message": "What someone who opens a survey link sees while the project is "
            "paused or closed (for example a late invitee). Empty: “This survey is closed”.",
        }
        widgets = {
            "closed_message": forms.Textarea(attrs={"rows": 3}),
            "available_from": forms.DateTimeInput(attrs={"type": "datetime-local"}),
            "available_until": forms.DateTimeInput(attrs={"type": "datetime-local"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Empty keeps the stored (or default) time: forms that predate quiet hours still post.
        for name in ("quiet_hours_start", "quiet_hours_end"):
            self.fields[name].required = False
            self.fields[name].widget = forms.TimeInput(attrs={"type": "time"})

    def clean_quiet_hours_start(self):
        return self.cleaned_data["quiet_hours_start"] or self.instance.quiet_hours_start

    def clean_quiet_hours_end(self):
        return self.cleaned_data["quiet_hours_end"] or self.instance.quiet_hours_end


class PauseForm(forms.Form):
    """The pause dialog (docs/survey.md, "Stages and pausing"): what happens to respondents in
    the middle of the survey, and to what they answered so far."""

    in_progress = forms.ChoiceField(
        label="Respondents in the middle of the survey",
        choices=[
            ("finish", "Let them finish: their answers are accepted"),
            ("close", "Close the survey now: their answers are not accepted as complete"),
        ],
        initial="finish",
        widget=forms.RadioSelect,
    )
    partial = forms.ChoiceField(
        label="Answers given by respondents who could not finish",
        choices=[
            ("keep", "Keep them as partial responses"),
            ("discard", "Discard them"),
        ],
        initial="keep",
        widget=forms.RadioSelect,
    )
    reason = forms.CharField(max_length=200, required=False, label="Reason (for the history)")
