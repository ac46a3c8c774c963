from django import forms

from brands.models import Brand
from brands.services import SEND_POLICY_FIELDS


class BrandPoliciesForm(forms.ModelForm):
    """The brand's time zone and default quiet hours (docs/policies.md)."""

    class Meta:
        model = Brand
        fields = list(SEND_POLICY_FIELDS)
        labels = {
            "quiet_hours_sms": "Quiet hours for SMS",
            "quiet_hours_email": "Quiet hours for email",
        }
        widgets = {
            "quiet_hours_start": forms.TimeInput(attrs={"type": "time"}),
            "quiet_hours_end": forms.TimeInput(attrs={"type": "time"}),
        }
