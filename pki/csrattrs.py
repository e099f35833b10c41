"""The EST CSR Attributes answer (RFC 7030 4.5, clarified by RFC 9908): what a device's CSR should
carry, here the key types and signature algorithms the CSR policy accepts (pure).

Encoded with pyasn1 and the `CsrAttrs` definition of pyasn1-alt-modules (the ASN.1 modules
pkilint already depends on) rather than hand-made DER.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import PublicKeyAlgorithmOID
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc7030

from pki.csr import CSR_SIGNATURE_ALGORITHMS
from pki.profiles import KeyType

CSR_ATTRIBUTES_CONTENT_TYPE = "application/csrattrs"


def _oid(oid: x509.ObjectIdentifier) -> univ.ObjectIdentifier:
    return univ.ObjectIdentifier(oid.dotted_string)


def _attribute(attribute_type: x509.ObjectIdentifier, values: Iterable[univ.Asn1Item]) -> rfc7030.AttrOrOID:
    attribute = rfc7030.Attribute()
    attribute["attrType"] = _oid(attribute_type)
    for index, value in enumerate(values):
        attribute["attrValues"][index] = univ.Any(encoder.encode(value))
    choice = rfc7030.AttrOrOID()
    choice["attribute"] = attribute
    return choice


def csr_attributes_der(
    key_types: Iterable[KeyType], signature_algorithms: Iterable[x509.ObjectIdentifier]
) -> bytes:
    """DER `CsrAttrs`: one attribute per public-key algorithm, then the signature algorithms.

    RFC 7030 4.5.2 writes a required EC key as the attribute id-ecPublicKey whose values are
    the allowed curves; RFC 9908 writes a required RSA key as the attribute rsaEncryption whose
    values are the allowed sizes in bits. A signature algorithm is a bare OID.
    """
    kinds = set(key_types)
    answer = rfc7030.CsrAttrs()
    rsa_bits = sorted(kind.rsa_bits for kind in kinds if kind is not KeyType.EC_P256)
    if KeyType.EC_P256 in kinds:
        curve = univ.ObjectIdentifier(ec.EllipticCurveOID.SECP256R1.dotted_string)
        answer.append(_attribute(PublicKeyAlgorithmOID.EC_PUBLIC_KEY, [curve]))
    if rsa_bits:
        answer.append(
            _attribute(PublicKeyAlgorithmOID.RSAES_PKCS1_v1_5, [univ.Integer(bits) for bits in rsa_bits])
        )
    for algorithm in sorted(signature_algorithms, key=lambda oid: oid.dotted_string):
        choice = rfc7030.AttrOrOID()
        choice["oid"] = _oid(algorithm)
        answer.append(choice)
    return bytes(encoder.encode(answer))


def allowed_csr_attributes() -> bytes:
    """What `parse_csr` accepts: every KeyType, and the SHA-2 signature algorithms."""
    return csr_attributes_der(KeyType, CSR_SIGNATURE_ALGORITHMS)
