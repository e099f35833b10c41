"""Enrolment groups in the API: what a client sends and what it gets back."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from devices.api.serializers import StringsOnly, single_line_field
from enrollment.factory import MAX_CA_PEM_LENGTH, PEM_CERTIFICATE_PATTERN
from enrollment.models import EnrollmentGroup

# A real, self-signed EC P-256 CA certificate (public data; its key was thrown away), valid from
# 2026 to 2076, so the docs show what `ca_certificate` takes and a client generated from the
# schema has a valid value to start from.
EXAMPLE_CA_CERTIFICATE = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBwTCCAWagAwIBAgIUBrKZvH2eD/zfOabUTjEW8wlbC4MwCgYIKoZIzj0EAwIw\n"
    "PTEYMBYGA1UECgwPRXhhbXBsZSBEZXZpY2VzMSEwHwYDVQQDDBhFeGFtcGxlIE1h\n"
    "bnVmYWN0dXJpbmcgQ0EwIBcNMjYwMTAxMDAwMDAwWhgPMjA3NjAxMDEwMDAwMDBa\n"
    "MD0xGDAWBgNVBAoMD0V4YW1wbGUgRGV2aWNlczEhMB8GA1UEAwwYRXhhbXBsZSBN\n"
    "YW51ZmFjdHVyaW5nIENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEUgU2d0nB\n"
    "z9ugHTqwohTqlztJUv1yGRdZNoSUyYuri4vQ4hqs+bqkHppp4J29vHlfKT6czF4Z\n"
    "wfSWntlSzV/38aNCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYw\n"
    "HQYDVR0OBBYEFOeHCzaTSdRUNqp+xYikIRZlhZXOMAoGCCqGSM49BAMCA0kAMEYC\n"
    "IQDy/hXKt6yLcg5/LqJOk1WEmIPmDn0JNxE6h8SVnsuaNQIhAKj8YODhY6PvlrNy\n"
    "P88zVWjiehV3AtHOgEMYB8/nvovE\n"
    "-----END CERTIFICATE-----\n"
)

# An allow-list is a factory batch or two; a bigger one belongs in several groups.
MAX_ALLOWED_HARDWARE_IDS = 10_000


@extend_schema_field(
    {
        "type": "string",
        "format": "pem-ca-certificate",
        "pattern": PEM_CERTIFICATE_PATTERN,
        "minLength": 1,
        "maxLength": MAX_CA_PEM_LENGTH,
        "example": EXAMPLE_CA_CERTIFICATE,
    }
)
class CACertificateField(StringsOnly, serializers.CharField):
    """A PEM CA certificate: the pattern says its shape; the format says that it must also be a
    real CA certificate (basicConstraints CA:TRUE, valid now), which no pattern can."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=MAX_CA_PEM_LENGTH, trim_whitespace=False, **kwargs)


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only: DRF's BooleanField also takes 1, "yes" and "off", which the
    schema (type boolean) does not admit."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError("Must be true or false.", code="invalid_type")
        return data


def allow_list_field(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=single_line_field(),
        max_length=MAX_ALLOWED_HARDWARE_IDS,
        help_text="hardware ids this group may enrol; empty: every one its CA vouches for",
        **kwargs,
    )


class EnrollmentGroupSerializer(serializers.ModelSerializer[EnrollmentGroup]):
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    allowed_hardware_ids = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = EnrollmentGroup
        fields = [
            "id",
            "name",
            "enabled",
            "ca_certificate",
            "ca_subject",
            "ca_fingerprint",
            "ca_not_after",
            "allowed_hardware_ids",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class EnrollmentGroupCreateSerializer(serializers.Serializer[Any]):
    name = single_line_field(help_text="a name for people, 1-128 characters, unique")
    ca_certificate = CACertificateField(help_text="the manufacturer's CA certificate (PEM)")
    allowed_hardware_ids = allow_list_field(required=False)
    enabled = StrictBooleanField(required=False, default=True, help_text="a disabled group enrols no one")


class EnrollmentGroupUpdateSerializer(serializers.Serializer[Any]):
    enabled = StrictBooleanField(required=False, help_text="a disabled group enrols no one")
    allowed_hardware_ids = allow_list_field(required=False)
