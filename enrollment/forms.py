"""Portal forms for enrolment groups."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from enrollment.api.serializers import MAX_ALLOWED_HARDWARE_IDS
from enrollment.factory import MAX_CA_PEM_LENGTH
from portal.forms import one_line


class EnrollmentGroupForm(forms.Form):
    name = forms.CharField(max_length=128, strip=False, help_text="Shown in lists; one line, unique.")
    ca_certificate = forms.CharField(
        label="Manufacturer CA certificate (PEM)",
        max_length=MAX_CA_PEM_LENGTH,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        help_text="The CA that signs the devices' factory certificates (-----BEGIN CERTIFICATE-----).",
    )
    allowed_hardware_ids = forms.CharField(
        label="Allowed hardware ids (optional)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="One per line. Empty: every device the CA vouches for may enrol.",
    )
    enabled = forms.BooleanField(required=False, initial=True, help_text="A disabled group enrols no one.")

    def clean_name(self) -> str:
        return one_line(self.cleaned_data["name"], "The name")

    def clean_allowed_hardware_ids(self) -> list[str]:
        lines = str(self.cleaned_data.get("allowed_hardware_ids") or "").splitlines()
        hardware_ids = [
            one_line(line, f"Line {number}") for number, line in enumerate(lines, 1) if line.strip()
        ]
        if len(hardware_ids) > MAX_ALLOWED_HARDWARE_IDS:
            raise ValidationError(f"At most {MAX_ALLOWED_HARDWARE_IDS} hardware ids.")
        return hardware_ids
