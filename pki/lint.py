"""RFC 5280 linting with pkilint, in process.

Issuance lints a copy of each certificate signed by a throw-away key before the CA key signs
anything (the pre-issuance linting Let's Encrypt's Boulder does): a certificate that breaks
the profile is never signed by the real CA. Building pkilint's validator tree is the
expensive part, so it is built once per process.
"""

from __future__ import annotations

import functools
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.x509 import Certificate, CertificateRevocationList
from pkilint import loader, pkix
from pkilint.pkix import certificate as pkix_certificate
from pkilint.pkix import crl as pkix_crl
from pkilint.pkix import extension, name
from pkilint.validation import ValidationFindingSeverity

# `lint_pkix_cert lint -s WARNING`: WARNING, ERROR and FATAL findings fail.
THRESHOLD = ValidationFindingSeverity.WARNING


@functools.cache
def _certificate_validator() -> Any:
    # The same validator tree `lint_pkix_cert` builds.
    return pkix_certificate.create_pkix_certificate_validator_container(
        pkix_certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            pkix_certificate.create_issuer_validator_container([]),
            pkix_certificate.create_validity_validator_container(),
            pkix_certificate.create_subject_validator_container([]),
            pkix_certificate.create_extensions_validator_container([]),
            pkix_certificate.create_spki_validator_container([]),
        ],
    )


@functools.cache
def _crl_validator() -> Any:
    # The same validator tree `lint_crl lint -t CRL -p PKIX` builds.
    return pkix_crl.create_pkix_crl_validator_container(
        [
            pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS),
        ],
        [
            pkix_crl.create_issuer_validator_container([]),
            pkix_crl.create_validity_validator_container([]),
            pkix_crl.create_extensions_validator_container([]),
        ],
    )


def _findings(results: Any) -> list[str]:
    findings = []
    for result in results:
        for description in result.finding_descriptions:
            if description.finding.severity <= THRESHOLD:
                text = f"{description.finding.severity.name} {description.finding.code}"
                if description.message:
                    text += f": {description.message}"
                findings.append(f"{text} ({result.node.path})")
    return findings


def lint_certificate(certificate: Certificate) -> list[str]:
    """Findings at WARNING or above; an empty list means the certificate conforms."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    return _findings(_certificate_validator().validate(document.root))


def lint_crl(crl: CertificateRevocationList) -> list[str]:
    der = crl.public_bytes(serialization.Encoding.DER)
    document = loader.RFC5280CertificateListDocumentLoader().load_der_document(der, "crl")
    return _findings(_crl_validator().validate(document.root))
