from __future__ import annotations

import functools
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from broker.dispatch import Access, default_rules
from devices.api.schema import EXAMPLE_CSR
from devices.models import Device, DeviceStatus
from devices.registration import Registration
from enrollment.enroll import AwaitingEnrollment
from onboard_cli import text_rules, vocabulary
from pki.csr import MAX_CSR_BYTES, PEM_CSR_PATTERN
from pki.keystore import get_ca
from pki.models import Certificate
from pki.profiles import KeyType, RevocationReason

MAX_METADATA_BYTES = 8 * 1024

# One line of text: the rule every entry point shares (onboard_cli.text_rules), also in the
# OpenAPI schema as a pattern, so clients can check before they send.
SINGLE_LINE_PATTERN = text_rules.PATTERN
SINGLE_LINE_MESSAGE = "Use one line of text, without control characters or spaces at either end."


class StringsOnly:
    """DRF's CharField turns 42 into "42"; an API with a schema should refuse it instead."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.", code="invalid_type")
        return super().to_internal_value(data)  # type: ignore[misc]


class SingleLineField(StringsOnly, serializers.RegexField):
    """The rule, naming what is wrong; its pattern (equivalent) documents it in the schema."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        problem = text_rules.one_line_problem(value)
        if problem is not None:
            raise serializers.ValidationError(f"The value {problem}.", code="invalid")
        return value


def single_line_field(**kwargs: Any) -> serializers.RegexField:
    return SingleLineField(
        SINGLE_LINE_PATTERN,
        max_length=text_rules.MAX_LENGTH,
        trim_whitespace=False,
        error_messages={"invalid": SINGLE_LINE_MESSAGE},
        **kwargs,
    )


@extend_schema_field(
    {
        "type": "string",
        "format": "pem-csr",
        "pattern": PEM_CSR_PATTERN,
        "minLength": 1,
        "maxLength": MAX_CSR_BYTES,
        "example": EXAMPLE_CSR,
    }
)
class CSRField(StringsOnly, serializers.CharField):
    """A PEM certificate request: the pattern says its shape (the server refuses any other), the
    format says that it must also be a real, self-signed PKCS#10 request, which no pattern can."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=MAX_CSR_BYTES, trim_whitespace=False, **kwargs)


class CertificateSummarySerializer(serializers.ModelSerializer[Certificate]):
    revocation_reason = serializers.SerializerMethodField(help_text="RFC 5280 reason; null until revoked")

    class Meta:
        model = Certificate
        fields = [
            "serial",
            "fingerprint_sha256",
            "subject",
            "key_type",
            "not_before",
            "not_after",
            "status",
            "revocation_reason",
            "revoked_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {"type": "string", "enum": [reason.value for reason in RevocationReason], "nullable": True}
    )
    def get_revocation_reason(self, certificate: Certificate) -> str | None:
        return certificate.revocation_reason or None


class TopicSerializer(serializers.Serializer[Any]):
    filter = serializers.CharField(help_text="MQTT topic filter")
    access = serializers.ChoiceField(choices=Access.values)


class DeviceSerializer(serializers.ModelSerializer[Device]):
    certificate = serializers.SerializerMethodField(help_text="the device's newest certificate")
    topics = serializers.SerializerMethodField(help_text="MQTT topics the device may use while active")
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Device
        fields = [
            "id",
            "name",
            "hardware_id",
            "status",
            "metadata",
            "failure_reason",
            "revocation_enforced_at",
            "renewal_requested_at",
            "created_by",
            "created_at",
            "updated_at",
            "certificate",
            "topics",
        ]
        read_only_fields = fields

    @extend_schema_field(CertificateSummarySerializer(allow_null=True))
    def get_certificate(self, device: Device) -> dict[str, Any] | None:
        certificate = device.current_certificate
        return certificate_summary(certificate) if certificate else None

    @extend_schema_field(TopicSerializer(many=True))
    def get_topics(self, device: Device) -> list[dict[str, str]]:
        # Only an active device holds rights; a revoked one is denied its tree on the broker.
        if device.status != DeviceStatus.ACTIVE:
            return []
        return [{"filter": rule.filter, "access": rule.access} for rule in default_rules(str(device.id))]


@functools.cache
def _bound(serializer_class: type[serializers.Serializer[Any]]) -> serializers.Serializer[Any]:
    """One serializer per class, its fields built once (DRF builds them anew for every instance,
    which cost more than the rest of a GET /device). Read-only use: `to_representation` keeps no
    state on the serializer, so threads can share it."""
    serializer = serializer_class()
    serializer.fields  # noqa: B018 - built here, once
    return serializer


def certificate_summary(certificate: Certificate) -> dict[str, Any]:
    return dict(_bound(CertificateSummarySerializer).to_representation(certificate))


def device_representation(device: Device) -> dict[str, Any]:
    """What `DeviceSerializer(device).data` gives, without building the serializer's fields."""
    return dict(_bound(DeviceSerializer).to_representation(device))


class BundleSerializer(serializers.Serializer[Any]):
    """A new credential bundle (an `IssuedBundle`): its link and password, shown this once."""

    download_url = serializers.URLField(source="url", help_text="one-time link to the encrypted ZIP")
    download_expires_at = serializers.DateTimeField(
        source="link.expires_at", help_text="the link stops working at this time"
    )
    bundle_password = serializers.CharField(
        source="password", help_text="opens the ZIP (AES-256); not stored by the portal"
    )


class NewCredentialsSerializer(serializers.Serializer[Any]):
    """What a registration, re-issue or retry (a `devices.registration.Registration`) adds to the device."""

    certificate_pem = serializers.SerializerMethodField(
        help_text="null while a worker is provisioning the device (202)"
    )
    ca_certificate_pem = serializers.SerializerMethodField()
    download_url = serializers.URLField(
        source="bundle.url",
        read_only=True,
        help_text="one-time link to the encrypted ZIP; while the device is pending it answers 409 "
        "bundle_not_ready and stays valid",
    )
    download_expires_at = serializers.DateTimeField(source="bundle.link.expires_at", read_only=True)
    bundle_password = serializers.CharField(
        source="bundle.password", read_only=True, help_text="opens the ZIP; shown this once"
    )

    @extend_schema_field({"type": "string", "nullable": True})
    def get_certificate_pem(self, registration: Registration) -> str | None:
        issued = registration.issued
        return issued.certificate.public_bytes(serialization.Encoding.PEM).decode() if issued else None

    def get_ca_certificate_pem(self, registration: Registration) -> str:
        return get_ca().certificate_pem.decode()


class RegistrationSerializer(DeviceSerializer, NewCredentialsSerializer):
    """The answer to a registration, re-issue or retry: the device (DeviceSerializer's fields),
    its certificate and its new bundle (NewCredentialsSerializer's). Rendered from a
    `devices.registration.Registration` through those two, so the answer is what the schema says."""

    class Meta(DeviceSerializer.Meta):
        fields = [*DeviceSerializer.Meta.fields, *NewCredentialsSerializer._declared_fields]
        read_only_fields = fields

    def to_representation(self, instance: Any) -> dict[str, Any]:
        registration: Registration = instance
        return {
            **device_representation(registration.device),
            **_bound(NewCredentialsSerializer).to_representation(registration),
        }


class AwaitingEnrollmentSerializer(DeviceSerializer):
    """The answer to a registration with `"delivery": "est"` (an `enrollment.enroll.AwaitingEnrollment`):
    the device, awaiting enrolment, and its one-time enrolment code."""

    enrollment_code = serializers.CharField(
        read_only=True,
        help_text="the device's one-time EST enrolment code (HTTP Basic password, username = device id); "
        "shown this once, stored only as a digest",
    )
    enrollment_code_expires_at = serializers.DateTimeField(
        read_only=True, help_text="the code stops working at this time"
    )

    class Meta(DeviceSerializer.Meta):
        fields = [*DeviceSerializer.Meta.fields, "enrollment_code", "enrollment_code_expires_at"]
        read_only_fields = fields

    def to_representation(self, instance: Any) -> dict[str, Any]:
        awaiting: AwaitingEnrollment = instance
        return {
            **device_representation(awaiting.device),
            "enrollment_code": awaiting.enrollment_code,
            "enrollment_code_expires_at": serializers.DateTimeField().to_representation(
                awaiting.enrollment_code_expires_at
            ),
        }


def awaiting_enrollment_representation(awaiting: AwaitingEnrollment) -> dict[str, Any]:
    """What a registration for EST delivery answers, through `AwaitingEnrollmentSerializer`."""
    return _bound(AwaitingEnrollmentSerializer).to_representation(awaiting)


def registration_representation(registration: Registration) -> dict[str, Any]:
    """What a registration, re-issue or retry answers, through `RegistrationSerializer`."""
    return _bound(RegistrationSerializer).to_representation(registration)


class RegisterRequestSerializer(serializers.Serializer[Any]):
    name = single_line_field(help_text="a name for people, 1-128 characters")
    hardware_id = single_line_field(
        required=False, allow_null=True, help_text="the maker's serial number; unique when given"
    )
    csr = CSRField(required=False, help_text="PEM certificate request, when the device made its own key")
    key_type = serializers.ChoiceField(
        choices=[kind.value for kind in KeyType],
        required=False,
        help_text="key the server generates (default rsa2048); ignored with a CSR, which brings its own key",
    )
    metadata = serializers.DictField(required=False, help_text="a JSON object of your own, up to 8 KiB")
    delivery = serializers.ChoiceField(
        choices=list(vocabulary.DELIVERIES),
        required=False,
        help_text="zip (default): the server signs now and answers a one-time ZIP link; est: the device "
        "enrols itself over EST (/.well-known/est/simpleenroll) with the enrolment code in the answer, "
        "and brings its own key then (csr and key_type are not used)",
    )

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise serializers.ValidationError(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON.")
        return value


class RevokeRequestSerializer(serializers.Serializer[Any]):
    reason = serializers.ChoiceField(
        choices=[reason.value for reason in RevocationReason],
        required=False,
        help_text="RFC 5280 reason code name (default unspecified)",
    )


class ReissueRequestSerializer(serializers.Serializer[Any]):
    csr = CSRField(required=False, help_text="a new CSR; required for devices that hold their own key")
    key_type = serializers.ChoiceField(
        choices=[kind.value for kind in KeyType],
        required=False,
        help_text="key type of the new server-generated key (default: as before); ignored with a CSR",
    )
