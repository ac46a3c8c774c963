from __future__ import annotations

from django import forms

from projects.models import Project


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = [
            "name",
            "kind",
            "available_from",
            "available_until",
            "default_country",
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
