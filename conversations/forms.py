from __future__ import annotations

from django import forms

from conversations.models import TwoWaySettings
from optouts.models import ConsentPolicy


class TwoWaySettingsForm(forms.ModelForm):
    class Meta:
        model = TwoWaySettings
        fields = ["expiry_hours", "max_invalid"]
        labels = {
            "expiry_hours": "Session expiry (hours)",
            "max_invalid": "Invalid answers allowed per question",
        }

    def clean_expiry_hours(self):
        value = self.cleaned_data["expiry_hours"]
        if not 1 <= value <= 24 * 30:
            raise forms.ValidationError("Between 1 hour and 30 days (720 hours).")
        return value

    def clean_max_invalid(self):
        value = self.cleaned_data["max_invalid"]
        if not 1 <= value <= 10:
            raise forms.ValidationError("Between 1 and 10.")
        return value


class KeywordForm(forms.Form):
    keyword = forms.CharField(max_length=40, help_text="One word, e.g. PULSE.")
    sender = forms.CharField(
        max_length=32, help_text="Your number (E.164) that people text the keyword to."
    )


class ConsentPolicyForm(forms.ModelForm):
    class Meta:
        model = ConsentPolicy
        fields = ["required", "extra_words"]
        labels = {
            "required": "Require consent: text invites only to numbers that replied YES",
            "extra_words": "Other words that mean yes",
        }
