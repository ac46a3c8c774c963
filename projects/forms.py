from __future__ import annotations

from django import forms

from distributions.forms import MessageField
from distributions.models import DistributionSeries
from projects.models import Project, Question


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "kind", "available_from", "available_until", "default_country"]
        widgets = {
            "available_from": forms.DateTimeInput(attrs={"type": "datetime-local"}),
            "available_until": forms.DateTimeInput(attrs={"type": "datetime-local"}),
        }


class QuestionForm(forms.Form):
    """A survey question as the editor page shows it: choices one per line."""

    kind = forms.ChoiceField(choices=Question.Kind.choices, initial=Question.Kind.RATING)
    text = forms.CharField(max_length=500, label="Question")
    help_text = forms.CharField(max_length=300, required=False, label="Help text")
    choices = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Single and multiple choice: one answer per line.",
        label="Answers to choose from",
    )
    required = forms.BooleanField(required=False, label="An answer is required")

    @classmethod
    def for_question(cls, question: Question, **kwargs) -> QuestionForm:
        return cls(
            initial={
                "kind": question.kind,
                "text": question.text,
                "help_text": question.help_text,
                "choices": "\n".join(question.choices),
                "required": question.required,
            },
            prefix=f"q{question.pk}",
            **kwargs,
        )

    def service_data(self) -> dict:
        data = dict(self.cleaned_data)
        data["choices"] = [line.strip() for line in data["choices"].splitlines() if line.strip()]
        return data


class PauseForm(forms.Form):
    """The pause dialog (overview seed): what happens to respondents in the middle of the
    survey, and to what they answered so far."""

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


class ResumeForm(forms.Form):
    resend_missed = forms.BooleanField(
        required=False,
        initial=True,
        label="Send now the distributions that were due while the project was paused",
    )


class LinksGenerateForm(forms.Form):
    """Personal links for a third-party mailer: one new link per participant, as CSV."""

    role = forms.CharField(
        max_length=120, required=False, help_text="Only participants with this role (optional)."
    )
    channel = forms.ChoiceField(
        choices=[("email", "Email"), ("sms", "SMS"), ("api", "Other (API)")],
        initial="email",
        help_text="How the links will be sent: responses are counted under this channel.",
    )
    expires_at = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        label="Expires at",
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
