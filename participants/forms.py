from django import forms


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
    role = forms.CharField(max_length=120, required=False)
