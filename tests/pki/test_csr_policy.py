"""What a device CSR may be (issue #16 item 19): RSA exponent 65537 only, no RSA-PSS (it would be
re-labelled rsaEncryption), no SHA-1 or MD5 signature; each refusal with its own code, the same
at every door that takes a CSR (the pure parser, the API's register and re-issue, the portal).

The CSRs are made by the real `openssl req`, as a device maker would make them.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import Client
from rest_framework.test import APIClient

from devices.models import Device
from pki import errors
from pki.csr import parse_csr
from pki.keystore import CertificateAuthority
from pki.models import Certificate
from pki.profiles import KeyType
from tests.support.helpers import make_csr, openssl_csr
from tests.support.portal import register_through_form, signed_in

# name -> (openssl req options, the error, its code, words the message must hold)
REFUSED: dict[str, tuple[list[str], type[errors.InvalidCSR], str, str]] = {
    "rsa-exponent-3": (
        ["-newkey", "rsa:2048", "-pkeyopt", "rsa_keygen_pubexp:3", "-sha256"],
        errors.CSRRSAExponentNotAllowed, "csr_rsa_exponent_not_allowed", "public exponent 3",
    ),
    "rsa-pss-signature": (
        ["-newkey", "rsa:2048", "-sigopt", "rsa_padding_mode:pss", "-sha256"],
        errors.CSRKeyTypeNotAllowed, "csr_key_type_not_allowed", "RSA-PSS",
    ),
    "rsa-pss-key": (
        ["-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048", "-sha256"],
        errors.CSRKeyTypeNotAllowed, "csr_key_type_not_allowed", "RSA-PSS",
    ),
    "sha1-signature": (
        ["-newkey", "rsa:2048", "-sha1"],
        errors.CSRSignatureAlgorithmNotAllowed, "csr_signature_algorithm_not_allowed", "SHA-1",
    ),
    "md5-signature": (
        ["-newkey", "rsa:2048", "-md5"],
        errors.CSRSignatureAlgorithmNotAllowed, "csr_signature_algorithm_not_allowed", "MD5",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def csrs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("csrs")
    made = {name: openssl_csr(directory, name, options) for name, (options, *_) in REFUSED.items()}
    made["good"] = openssl_csr(directory, "good", ["-newkey", "rsa:2048", "-sha256"])
    return made


class TestParser:
    def test_an_ordinary_openssl_csr_is_accepted(self, csrs: dict[str, str]) -> None:
        assert parse_csr(csrs["good"]).key_type is KeyType.RSA2048

    @pytest.mark.parametrize("case", sorted(REFUSED))
    def test_refused_with_its_own_code(self, csrs: dict[str, str], case: str) -> None:
        _, error, code, words = REFUSED[case]
        with pytest.raises(error, match=words) as refused:
            parse_csr(csrs[case])
        assert refused.value.code == code

    def test_sha1_is_named_not_called_a_bad_signature(self, csrs: dict[str, str]) -> None:
        with pytest.raises(errors.InvalidCSR) as refused:
            parse_csr(csrs["sha1-signature"])
        assert not isinstance(refused.value, errors.CSRSignatureInvalid)
        assert "does not match" not in refused.value.message

    def test_exponent_3_from_cryptography_too(self) -> None:
        key = rsa.generate_private_key(public_exponent=3, key_size=2048)
        with pytest.raises(errors.CSRRSAExponentNotAllowed):
            parse_csr(make_csr(key))


def assert_refused(response: Any, case: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == REFUSED[case][2]
    assert REFUSED[case][3] in error["message"]


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.parametrize("signing", ["in-process", "on-workers"])
def test_register_answers_400_with_the_code_and_records_nothing(
    operator_api: APIClient, csrs: dict[str, str], case: str, signing: str, settings: Any
) -> None:
    # With workers, the CSR is checked in the request, before the device is queued.
    settings.CELERY_TASK_ALWAYS_EAGER = signing == "in-process"
    response = operator_api.post("/register", {"name": "sensor", "csr": csrs[case]}, format="json")
    assert_refused(response, case)
    assert Device.objects.count() == 0 and Certificate.objects.count() == 0


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_reissue_answers_400_with_the_code_and_keeps_the_certificate(
    operator_api: APIClient, csrs: dict[str, str], case: str
) -> None:
    registered = operator_api.post("/register", {"name": "s", "csr": csrs["good"]}, format="json")
    assert registered.status_code == 201, registered.content
    device_id = registered.json()["id"]
    response = operator_api.post(f"/api/v1/devices/{device_id}/reissue", {"csr": csrs[case]}, format="json")
    assert_refused(response, case)
    assert Certificate.objects.filter(device_id=device_id).count() == 1


@pytest.mark.parametrize("case", ["sha1-signature", "rsa-pss-key", "rsa-exponent-3"])
def test_portal_form_shows_the_same_sentence(
    ca: CertificateAuthority, make_user: Any, verified_login: Any, csrs: dict[str, str], case: str
) -> None:
    operator: Client = signed_in(make_user, verified_login, "Operators", "olga")
    page = register_through_form(operator, name="own-key", csr=csrs[case])
    assert page.status_code == 200
    assert REFUSED[case][3] in page.content.decode()
    assert Device.objects.count() == 0
