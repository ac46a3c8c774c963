"""Survey forms of the project pages: a question of the editor, a batch of personal links."""

from __future__ import annotations

from django import forms

from projects.models import Question


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
