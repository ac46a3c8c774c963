from django import forms
from django.core.exceptions import ValidationError

from participants.importer import REQUIRABLE
from participants.metadata import is_protected
from participants.models import ImportJob
from participants.services import describe_size, import_max_upload_bytes


class MetadataField(forms.CharField):
    """Metadata as text, one ``Field: value`` per line. ``Opted out`` cannot be edited."""

    widget = forms.Textarea(attrs={"rows": 4})

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault(
            "help_text", "One field per line, as “Field: value”. Opt-out status is not editable."
        )
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(f"{k}: {v}" for k, v in value.items() if not is_protected(k))
        return value

    def clean(self, value):
        text = super().clean(value) or ""
        result: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            key, sep, val = line.partition(":")
            if not sep or not key.strip():
                raise ValidationError(f"Line {number}: write “Field: value”.")
            if is_protected(key):
                raise ValidationError(
                    f"Line {number}: “{key.strip()}” is set only by the person's opt-out and "
                    "cleared only by an opt-in."
                )
            result[" ".join(key.split())] = val.strip()
        return result


class ParticipantForm(forms.Form):
    person_id = forms.CharField(label="PersonID", max_length=128, required=False)
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField(required=False)
    username = forms.CharField(label="User name", max_length=150, required=False)
    phone = forms.CharField(
        label="Phone number",
        max_length=40,
        required=False,
        help_text="International (+44 20 7946 0958) or national in the project's country.",
    )
    time_zone = forms.CharField(
        label="Time zone",
        max_length=64,
        required=False,
        help_text="IANA name such as America/New_York; empty: from the phone number.",
    )
    role = forms.CharField(max_length=120, required=False)
    metadata = MetadataField(label="Metadata (directory)")


class PersonForm(ParticipantForm):
    role = None


class ImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text=(
            "Columns: PersonID (or ExternalDataReference), First name, Last name, Email, User "
            "name, Phone number (or Phone), Role; any other column becomes metadata. UTF-8 or "
            "Windows-1252; comma, semicolon or tab."
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.txt,.tsv,text/csv"}),
    )
    erase_empty = forms.BooleanField(
        label="Empty cells erase stored values",
        required=False,
        help_text=(
            "Off: an empty cell leaves what is stored. PersonID and opt-outs are never erased."
        ),
    )
    metadata_target = forms.ChoiceField(
        label="Extra columns go to",
        choices=ImportJob.MetadataTarget.choices,
        initial=ImportJob.MetadataTarget.PERSON,
        required=False,
        widget=forms.RadioSelect,
    )
    required_fields = forms.MultipleChoiceField(
        label="Every row must have",
        choices=list(REQUIRABLE.items()),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="For an SMS project, tick Phone number: rows without one become errors.",
    )

    def __init__(self, *args, project=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text += f" At most {describe_size(import_max_upload_bytes())}."
        if project is None:
            del self.fields["metadata_target"]
