"""Errors of the certificate authority, each with a machine-readable code and a sentence."""

from __future__ import annotations

from kernel.errors import ServiceError


class PKIError(ServiceError):
    code = "pki_error"
    status = 500


class CANotInitialized(PKIError):
    code = "ca_not_initialized"
    status = 503


class CAKeyError(PKIError):
    """The CA exists but cannot be used: unreadable, wrong passphrase, loose permissions."""

    code = "ca_key_unusable"
    status = 503


class CAAlreadyExists(PKIError):
    code = "ca_exists"
    status = 409


class InvalidCSR(PKIError):
    code = "invalid_csr"
    status = 400


class CSRSignatureInvalid(InvalidCSR):
    code = "csr_signature_invalid"


class CSRKeyNotAllowed(InvalidCSR):
    code = "csr_key_not_allowed"


class CSRRSAExponentNotAllowed(CSRKeyNotAllowed):
    """An RSA key whose public exponent is not 65537 (e = 3 invites the low-exponent attacks on
    PKCS#1 v1.5 signature checking, such as Bleichenbacher's 2006 forgery)."""

    code = "csr_rsa_exponent_not_allowed"


class CSRKeyTypeNotAllowed(CSRKeyNotAllowed):
    """An RSA-PSS key (or PSS-signed request): the CA issues only rsaEncryption and EC keys, and
    copying the key into a certificate would silently drop its PSS-only restriction (RFC 4055 1.2)."""

    code = "csr_key_type_not_allowed"


class CSRSignatureAlgorithmNotAllowed(InvalidCSR):
    """The request is signed with a broken or unexpected hash (SHA-1, MD5): refused before its
    signature is checked, so the answer names the algorithm instead of "does not match"."""

    code = "csr_signature_algorithm_not_allowed"


class UnsupportedKeyType(PKIError):
    code = "unsupported_key_type"
    status = 400


class CertificateLintError(PKIError):
    """The certificate about to be signed breaks RFC 5280; nothing was signed with the CA key."""

    code = "certificate_lint_failed"
    status = 500


class CertificateAlreadyRevoked(PKIError):
    code = "already_revoked"
    status = 409


class InvalidRevocationReason(PKIError):
    code = "invalid_reason"
    status = 400


class CRLPublicationError(PKIError):
    code = "crl_publication_failed"
    status = 503


class CRLNotPublished(PKIError):
    code = "crl_not_published"
    status = 503


class CRLInvalid(PKIError):
    """The CRL on disk fails verification (damaged, tampered with, not the CA's, or past its
    nextUpdate): it is not served or reported healthy, and the previous copies stay in use."""

    code = "crl_invalid"
    status = 503
