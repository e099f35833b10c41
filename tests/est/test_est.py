"""EST's unauthenticated operations (RFC 7030 4.1 cacerts, 4.5 csrattrs) through Django."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs7
from django.test import Client

from pki.csrattrs import allowed_csr_attributes
from pki.keystore import CertificateAuthority


def test_cacerts_is_a_base64_certs_only_pkcs7(ca: CertificateAuthority, client: Client) -> None:
    answer = client.get("/.well-known/est/cacerts")
    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert answer["Content-Transfer-Encoding"] == "base64"
    assert pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer.content)) == [ca.certificate]


def test_csrattrs_is_base64_der(ca: CertificateAuthority, client: Client) -> None:
    answer = client.get("/.well-known/est/csrattrs")
    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/csrattrs"
    assert answer["Content-Transfer-Encoding"] == "base64"
    assert base64.b64decode(answer.content) == allowed_csr_attributes()


def test_only_get_and_head(ca: CertificateAuthority, client: Client) -> None:
    assert client.head("/.well-known/est/cacerts").status_code == 200
    assert client.post("/.well-known/est/cacerts").status_code == 405
    assert client.post("/.well-known/est/csrattrs").status_code == 405


def test_no_ca_yet_is_503_with_the_json_error_body_for_json_clients(fresh_ca_root: Path, db: None) -> None:
    client = Client()
    answer = client.get("/.well-known/est/cacerts", HTTP_ACCEPT="application/json")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "ca_not_initialized"
    plain = client.get("/.well-known/est/cacerts")
    assert plain.status_code == 503 and plain["Content-Type"].startswith("text/plain")
    assert b"not been created" in plain.content


@pytest.mark.parametrize("path", ["/.well-known/est/cacerts", "/.well-known/est/csrattrs"])
def test_public_operations_are_not_redirected_to_https(ca: CertificateAuthority, settings, path: str) -> None:
    """Like /ca.crt: public material a device reads before it can check the portal's TLS."""
    settings.SECURE_SSL_REDIRECT = True
    assert Client().get(path).status_code == 200
    assert Client().get("/.well-known/est/simpleenroll").status_code == 301


def test_an_unknown_est_operation_is_a_json_404(db: None) -> None:
    """RFC 7030 3.2.2 names the operations; any other path under /.well-known/est/ is the API's
    JSON 404, not the portal's HTML page."""
    answer = Client().get("/.well-known/est/serverkeygen")
    assert answer.status_code == 404
    assert answer["Content-Type"] == "application/json"
    assert answer.json()["error"]["code"] == "not_found"


def test_a_csr_under_another_media_type_is_415(ca: CertificateAuthority, client: Client) -> None:
    """RFC 7030 4.2.1: the request is application/pkcs10; anything else is refused before the
    credentials are looked at."""
    answer = client.post(
        "/.well-known/est/simpleenroll", data=b"MIIB", content_type="application/json",
        HTTP_ACCEPT="application/json",
    )  # fmt: skip
    assert answer.status_code == 415, answer.content
    assert answer.json()["error"]["code"] == "unsupported_media_type"
