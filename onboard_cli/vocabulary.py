"""The names the REST API speaks that the `onboard` client offers as choices: key types,
revocation reasons and device statuses. Written once, here; the server's enumerations
(`pki.profiles.KeyType`, `pki.profiles.RevocationReason`, `devices.models.DeviceStatus`) take
their values from these, and the client's options list them.

Pure Python, no imports: it ships with the client, which must not import Django, and the server
imports it from the checkout (as it does `onboard_cli.text_rules`).
"""

from __future__ import annotations

# Key types the CA generates, and the only ones it accepts in a CSR.
RSA2048 = "rsa2048"
RSA3072 = "rsa3072"
EC_P256 = "ec-p256"
KEY_TYPES = (RSA2048, RSA3072, EC_P256)

# RFC 5280 5.3.1 reason codes a device certificate may be revoked with.
UNSPECIFIED = "unspecified"
KEY_COMPROMISE = "keyCompromise"
AFFILIATION_CHANGED = "affiliationChanged"
SUPERSEDED = "superseded"
CESSATION_OF_OPERATION = "cessationOfOperation"
PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"
REVOCATION_REASONS = (
    UNSPECIFIED,
    KEY_COMPROMISE,
    AFFILIATION_CHANGED,
    SUPERSEDED,
    CESSATION_OF_OPERATION,
    PRIVILEGE_WITHDRAWN,
)

# A device's state.
PENDING = "pending"
ACTIVE = "active"
REVOKED = "revoked"
FAILED = "failed"
# Registered for EST delivery: no key, no certificate until the device enrols with its code.
AWAITING_ENROLLMENT = "awaiting_enrollment"
DEVICE_STATUSES = (PENDING, ACTIVE, REVOKED, FAILED, AWAITING_ENROLLMENT)

# How a registration delivers credentials: a ZIP behind a one-time link, or EST enrolment
# (docs/est.md) with a one-time enrolment code.
DELIVERY_ZIP = "zip"
DELIVERY_EST = "est"
DELIVERIES = (DELIVERY_ZIP, DELIVERY_EST)
