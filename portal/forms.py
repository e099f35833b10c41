"""Portal forms: sign-in steps, registration, revocation, re-issue and the bulk upload."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from onboard_cli import text_rules, vocabulary
from pki.csr import MAX_CSR_BYTES
from pki.profiles import KeyType, RevocationReason

MAX_CSV_BYTES = 2 * 1024 * 1024
METADATA_LINES = 50
# Metadata typed into the portal (the form's key=value lines, a bulk file's extra columns):
# longer keys and values are cut to these lengths.
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 256

KEY_TYPE_CHOICES = [
    (KeyType.RSA2048.value, "RSA 2048 (default)"),
    (KeyType.RSA3072.value, "RSA 3072"),
    (KeyType.EC_P256.value, "EC P-256"),
]
REASON_CHOICES = [
    (RevocationReason.UNSPECIFIED.value, "Unspecified"),
    (RevocationReason.KEY_COMPROMISE.value, "Key compromise"),
    (RevocationReason.CESSATION_OF_OPERATION.value, "Cessation of operation (decommissioned)"),
    (RevocationReason.AFFILIATION_CHANGED.value, "Affiliation changed"),
    (RevocationReason.SUPERSEDED.value, "Superseded"),
    (RevocationReason.PRIVILEGE_WITHDRAWN.value, "Privilege withdrawn"),
]


def one_line(value: str, label: str) -> str:
    """The name and hardware id rule every entry point shares (onboard_cli.text_rules)."""
    value = text_rules.clean_typed(value)
    problem = text_rules.one_line_problem(value)
    if problem is not None:
        raise ValidationError(f"{label} {problem}.")
    return value


class PasswordForm(forms.Form):
    username = forms.CharField(max_length=150, widget=forms.TextInput(attrs={"autocomplete": "username"}))
    password = forms.CharField(
        strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Authentication code",
        max_length=32,
        help_text="The 6-digit code from your authenticator app, or one of your backup codes.",
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "text",
                "autofocus": True,
                "spellcheck": "false",
            }
        ),
    )

    def clean_code(self) -> str:
        return str(self.cleaned_data["code"]).replace(" ", "").strip()


class CSRFields(forms.Form):
    """A CSR pasted or uploaded: one of the two, at most MAX_CSR_BYTES."""

    csr = forms.CharField(
        label="CSR (PEM), optional",
        required=False,
        max_length=MAX_CSR_BYTES,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="Paste the device's certificate signing request if the device keeps its own key.",
    )
    csr_file = forms.FileField(label="or upload the CSR file", required=False)

    def csr_pem(self) -> str | None:
        pasted = str(self.cleaned_data.get("csr") or "").strip()
        upload = self.cleaned_data.get("csr_file")
        if pasted and upload:
            raise ValidationError("Paste the CSR or upload it, not both.")
        if upload:
            if upload.size > MAX_CSR_BYTES:
                raise ValidationError(f"The CSR file is larger than {MAX_CSR_BYTES // 1024} kB.")
            try:
                return str(upload.read().decode("ascii")).strip()
            except UnicodeDecodeError:
                raise ValidationError(
                    "The CSR file must be PEM text (-----BEGIN CERTIFICATE REQUEST-----)."
                ) from None
        return pasted or None

    def clean(self) -> dict[str, Any]:
        """Puts the one CSR, pasted or uploaded, in cleaned_data["csr_pem"]."""
        cleaned = super().clean() or {}
        try:
            cleaned["csr_pem"] = self.csr_pem()
        except ValidationError as error:
            self.add_error("csr", error)
        return cleaned


DELIVERY_CHOICES = [
    (vocabulary.DELIVERY_ZIP, "Encrypted ZIP behind a one-time download link"),
    (vocabulary.DELIVERY_EST, "EST enrolment: the device enrols itself with a one-time code"),
]


class RegisterForm(CSRFields):
    # strip=False: Django's strip would cut a line break or U+2028 off the ends unseen; the
    # shared rule refuses them instead (only plain spaces are dropped).
    name = forms.CharField(
        max_length=text_rules.MAX_LENGTH, strip=False, help_text="Shown in lists; one line."
    )
    hardware_id = forms.CharField(
        label="Hardware id (optional)",
        max_length=text_rules.MAX_LENGTH,
        required=False,
        strip=False,
        help_text="Serial number or MAC; unique.",
    )
    key_type = forms.ChoiceField(
        choices=KEY_TYPE_CHOICES,
        initial=KeyType.RSA2048.value,
        help_text="For a key the portal generates; ignored with a CSR.",
    )
    metadata = forms.CharField(
        label="Metadata (optional)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text="One key=value per line, for example site=Lyon.",
    )
    delivery = forms.ChoiceField(
        label="Credentials",
        choices=DELIVERY_CHOICES,
        initial=vocabulary.DELIVERY_ZIP,
        required=False,  # a form sent without it (a script, an older page) asks for the ZIP
        help_text="EST: the device makes its own key and enrols itself with a one-time code "
        "(no ZIP; key type and CSR are not used).",
    )
    field_order = ["name", "hardware_id", "delivery", "key_type", "csr", "csr_file", "metadata"]

    def clean_name(self) -> str:
        return one_line(self.cleaned_data["name"], "The name")

    def clean_hardware_id(self) -> str | None:
        value = text_rules.clean_typed(str(self.cleaned_data.get("hardware_id") or ""))
        return one_line(value, "The hardware id") if value else None

    def clean_metadata(self) -> dict[str, str]:
        return parse_metadata(str(self.cleaned_data.get("metadata") or ""))

    def clean_delivery(self) -> str:
        return str(self.cleaned_data.get("delivery") or vocabulary.DELIVERY_ZIP)


def parse_metadata(text: str) -> dict[str, str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > METADATA_LINES:
        raise ValidationError(f"At most {METADATA_LINES} metadata lines.")
    metadata: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        key, separator, value = line.partition("=")
        if not separator or not key.strip():
            raise ValidationError(f"Line {number}: write key=value.")
        metadata[key.strip()[:MAX_METADATA_KEY]] = value.strip()[:MAX_METADATA_VALUE]
    return metadata


class RevokeForm(forms.Form):
    reason = forms.ChoiceField(
        choices=REASON_CHOICES,
        help_text="RFC 5280 reason written into the CRL. Choose key compromise if the key may have leaked.",
    )
    confirm = forms.BooleanField(
        label="I understand the device will be refused by the broker at once, and this cannot be undone."
    )


class ReissueForm(CSRFields):
    key_type = forms.ChoiceField(
        choices=[("", "Keep the current key type"), *KEY_TYPE_CHOICES],
        required=False,
        help_text="For a key the portal generates.",
    )
    field_order = ["key_type", "csr", "csr_file"]


class BulkUploadForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="UTF-8, with a header row: name, hardware_id, and optionally key_type; "
        "any other column becomes device metadata.",
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_CSV_BYTES:
            raise ValidationError(f"The file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB.")
        return upload
