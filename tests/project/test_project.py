"""Project-level promises: migrations in step with models, pages and public PKI files served."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from django.core.management import call_command
from django.test import Client

from pki.issuance import issue_certificate
from pki.keystore import CertificateAuthority, keystore
from pki.profiles import KeyType, sha256_fingerprint
from pki.revocation import revoke_certificate


@pytest.mark.django_db
def test_migrations_match_the_models() -> None:
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


def test_home_page_shows_the_ca(ca: CertificateAuthority, client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Test Session CA" in body
    assert sha256_fingerprint(ca.certificate) in body


def test_home_page_without_a_ca_says_what_to_do(fresh_ca_root: Path, client: Client, db) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "python manage.py init_ca" in response.content.decode()


def test_crl_is_served_as_pem_and_der(ca: CertificateAuthority, client: Client, crl_file: Path) -> None:
    record = issue_certificate("device", key_type=KeyType.EC_P256).record
    revoke_certificate(record)
    pem_response = client.get("/crl.pem")
    assert pem_response.status_code == 200
    assert pem_response["Content-Type"] == "application/x-pem-file"
    served = x509.load_pem_x509_crl(pem_response.content)
    assert served.get_revoked_certificate_by_serial_number(record.serial_number) is not None

    der_response = client.get("/ca.crl")
    assert der_response["Content-Type"] == "application/pkix-crl"
    assert x509.load_der_x509_crl(der_response.content) == served


def test_ca_certificate_is_served(ca: CertificateAuthority, client: Client) -> None:
    response = client.get("/ca.crt")
    assert response.status_code == 200
    assert response.content == keystore().certificate_path.read_bytes()


def test_public_files_without_a_ca_answer_503(fresh_ca_root: Path, client: Client) -> None:
    for path in ("/crl.pem", "/ca.crl", "/ca.crt"):
        response = client.get(path)
        assert response.status_code == 503
        assert b"has not been created" in response.content


def test_crl_refuses_writes(ca: CertificateAuthority, client: Client) -> None:
    assert client.post("/crl.pem").status_code == 405
