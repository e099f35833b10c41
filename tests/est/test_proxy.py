"""The TLS front: proxy_config's nginx configuration (rendered purely, then run by Debian's nginx in
front of a real gunicorn), and the one function that believes a client certificate only when it
came through that nginx."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import CommandError, call_command
from django.http import HttpRequest
from django.test import RequestFactory

from pki.issuance import issue_certificate
from pki.keystore import CertificateAuthority
from pki.models import Certificate, CertificatePurpose
from pki.profiles import KeyType
from proxy.client_cert import verified_client_certificate
from proxy.nginx import UPSTREAM_KEEPALIVE_SECONDS, InvalidProxySetting, ProxySettings, render_nginx_conf
from tests.support import ROOT
from tests.support.est_front import Front, tls_front

NGINX = "/usr/sbin/nginx"
SECRET = "s" * 40

SETTINGS = ProxySettings(
    listen="8443",
    upstreams=("web:8000", "10.0.0.2:8000"),
    server_name="portal.example.com",
    certificate_file=Path("/srv/proxy/server.crt"),
    key_file=Path("/srv/proxy/server.key"),
    client_ca_file=Path("/srv/proxy/client-ca.pem"),
    secret=SECRET,
    run_dir=Path("/tmp/nginx"),
)


class TestRender:
    def test_every_upstream_in_one_balanced_block(self) -> None:
        text = render_nginx_conf(SETTINGS)
        assert "upstream portal {\n        server web:8000;\n        server 10.0.0.2:8000;\n" in text
        assert "proxy_pass http://portal;" in text
        assert "listen 8443 ssl;" in text and "server_name portal.example.com;" in text

    def test_nginx_lets_an_idle_upstream_connection_go_before_gunicorn_does(self) -> None:
        """A connection gunicorn closes while nginx sends on it is a 502 nginx does not retry for
        a POST: nginx closes idle upstream connections first."""
        from gunicorn.config import Config

        gunicorn_keepalive = Config().keepalive
        deployed = (ROOT / "deploy" / "gunicorn_config.py").read_text()
        assert "keepalive" not in deployed  # the image runs gunicorn's default
        assert gunicorn_keepalive > UPSTREAM_KEEPALIVE_SECONDS
        assert f"keepalive_timeout {UPSTREAM_KEEPALIVE_SECONDS}s;" in render_nginx_conf(SETTINGS)

    def test_client_certificates_optional_and_passed_with_the_secret(self) -> None:
        text = render_nginx_conf(SETTINGS)
        assert "ssl_client_certificate /srv/proxy/client-ca.pem;" in text
        assert "ssl_verify_client optional_no_ca;" in text
        assert "proxy_set_header X-Client-Cert $ssl_client_escaped_cert;" in text
        assert "proxy_set_header X-Client-Verify $ssl_client_verify;" in text
        assert f'proxy_set_header X-Proxy-Secret "{SECRET}";' in text
        assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
        assert "proxy_set_header X-Forwarded-Proto $scheme;" in text

    def test_everything_nginx_writes_is_under_the_run_directory(self) -> None:
        text = render_nginx_conf(SETTINGS)
        for directive in ("pid", "error_log", "client_body_temp_path", "proxy_temp_path",
                          "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path"):  # fmt: skip
            assert f"{directive} /tmp/nginx/" in text, directive
        # No `user` unless asked: an ordinary user's nginx would warn about it.
        assert "\nuser " not in text and not text.startswith("user ")
        assert "\nuser nginx;\n" in render_nginx_conf(replace(SETTINGS, user="nginx"))
        assert "error_log stderr crit;" in render_nginx_conf(replace(SETTINGS, log_to_stderr=True))

    def test_no_line_names_a_request_path(self) -> None:
        """Paths such as /download/<token> are credentials: no access log, no error-level lines."""
        text = render_nginx_conf(SETTINGS)
        assert "access_log off;" in text and "error_log /tmp/nginx/error.log crit;" in text

    @pytest.mark.parametrize(
        "change",
        [
            {"listen": "8443; include /etc/passwd"},
            {"listen": "70000"},
            {"upstreams": ()},
            {"upstreams": ("web:8000;",)},
            {"upstreams": ("web",)},
            {"server_name": "portal.example.com; return 200"},
            {"secret": "short"},
            {"secret": 'x" ; ' + "y" * 40},
            {"secret": "$" + "y" * 40},
            {"run_dir": Path("relative")},
            {"client_ca_file": Path("/srv/a dir/ca.pem")},
            {"user": "root; daemon off"},
        ],
    )
    def test_nothing_that_could_change_the_configuration_gets_in(self, change: dict[str, object]) -> None:
        with pytest.raises(InvalidProxySetting):
            render_nginx_conf(replace(SETTINGS, **change))  # type: ignore[arg-type]

    def test_nginx_accepts_the_rendered_file(self, tmp_path: Path) -> None:
        """`nginx -t` with the rendered text and a throw-away self-signed certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name.from_rfc4514_string("CN=test")
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime(2020, 1, 1)).not_valid_after(dt.datetime(2040, 1, 1))
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        (tmp_path / "server.crt").write_bytes(pem)
        (tmp_path / "ca.pem").write_bytes(pem)
        (tmp_path / "server.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        text = render_nginx_conf(
            replace(
                SETTINGS,
                upstreams=("127.0.0.1:9", "localhost:10"),
                certificate_file=tmp_path / "server.crt",
                key_file=tmp_path / "server.key",
                client_ca_file=tmp_path / "ca.pem",
                run_dir=tmp_path,
            )
        )
        (tmp_path / "nginx.conf").write_text(text)
        result = subprocess.run(
            [NGINX, "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


class TestVerifiedClientCertificate:
    @pytest.fixture
    def device_certificate(self, ca: CertificateAuthority, settings) -> x509.Certificate:
        settings.PROXY_SECRET = SECRET
        return x509.load_pem_x509_certificate(
            issue_certificate("probe-device", key_type=KeyType.EC_P256).record.pem.encode()
        )

    def _request(
        self, certificate: x509.Certificate, secret: str | None, verify: str = "SUCCESS"
    ) -> HttpRequest:
        """What gunicorn hands Django for a request with these three headers."""
        headers = {
            "X-Client-Cert": quote(certificate.public_bytes(serialization.Encoding.PEM).decode(), safe=""),
            "X-Client-Verify": verify,
        }
        if secret is not None:
            headers["X-Proxy-Secret"] = secret
        return RequestFactory().get("/.well-known/est/simplereenroll", headers=headers)

    def test_believed_with_the_secret_and_success(self, device_certificate: x509.Certificate) -> None:
        assert verified_client_certificate(self._request(device_certificate, SECRET)) == device_certificate

    def test_not_without_the_secret_or_with_a_wrong_one(self, device_certificate: x509.Certificate) -> None:
        assert verified_client_certificate(self._request(device_certificate, None)) is None
        assert verified_client_certificate(self._request(device_certificate, "t" * 40)) is None
        assert verified_client_certificate(self._request(device_certificate, "")) is None

    def test_not_when_nginx_did_not_verify_it(self, device_certificate: x509.Certificate) -> None:
        for verdict in ("NONE", "FAILED:certificate has expired", ""):
            assert verified_client_certificate(self._request(device_certificate, SECRET, verdict)) is None

    def test_never_while_the_portal_has_no_secret(
        self, device_certificate: x509.Certificate, settings
    ) -> None:
        settings.PROXY_SECRET = ""
        assert verified_client_certificate(self._request(device_certificate, "")) is None

    def test_garbage_is_no_certificate(self, settings) -> None:
        settings.PROXY_SECRET = SECRET
        request = RequestFactory().get(
            "/",
            HTTP_X_CLIENT_CERT="not%20a%20certificate",
            HTTP_X_CLIENT_VERIFY="SUCCESS",
            HTTP_X_PROXY_SECRET=SECRET,
        )
        assert verified_client_certificate(request) is None


def _self_signed(stem: Path, common_name: str) -> None:
    """STEM.crt and STEM.key: a self-signed EC certificate made by openssl, from outside the portal."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", f"/CN={common_name}", "-days", "30", "-keyout", f"{stem}.key", "-out", f"{stem}.crt"],
        check=True, capture_output=True,
    )  # fmt: skip


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestProxyConfigCommand:
    def test_writes_a_configuration_and_a_server_certificate_from_the_ca(
        self, ca: CertificateAuthority, settings, tmp_path: Path
    ) -> None:
        settings.PROXY_SECRET = SECRET
        out = tmp_path / "proxy"
        call_command("proxy_config", "--out", str(out), "--listen", "8443", "--upstream", "127.0.0.1:8000",
                     "--hostname", "portal.example.com")  # fmt: skip
        assert _mode(out / "nginx.conf") == 0o600 and _mode(out / "server.key") == 0o600
        assert SECRET in (out / "nginx.conf").read_text()
        certificate = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["portal.example.com"]
        assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        assert certificate.issuer == ca.certificate.subject
        assert Certificate.objects.filter(purpose=CertificatePurpose.PORTAL).count() == 1
        assert x509.load_pem_x509_certificates((out / "client-ca.pem").read_bytes()) == [ca.certificate]
        # Run again with the same names: the certificate is kept, not re-issued.
        call_command("proxy_config", "--out", str(out), "--listen", "8443", "--upstream", "127.0.0.1:8000",
                     "--hostname", "portal.example.com")  # fmt: skip
        assert Certificate.objects.filter(purpose=CertificatePurpose.PORTAL).count() == 1

    def test_operator_certificate_and_extra_client_cas(
        self, ca: CertificateAuthority, settings, tmp_path: Path
    ) -> None:
        settings.PROXY_SECRET = SECRET
        _self_signed(tmp_path / "m", "Manufacturer CA")
        out = tmp_path / "proxy"
        call_command("proxy_config", "--out", str(out), "--listen", "8443", "--upstream", "web:8000",
                     "--server-cert", str(tmp_path / "m.crt"), "--server-key", str(tmp_path / "m.key"),
                     "--client-ca", str(tmp_path / "m.crt"))  # fmt: skip
        assert (out / "server.crt").read_bytes() == (tmp_path / "m.crt").read_bytes()
        assert _mode(out / "server.key") == 0o600
        subjects = [
            c.subject.rfc4514_string()
            for c in x509.load_pem_x509_certificates((out / "client-ca.pem").read_bytes())
        ]
        assert subjects == [ca.certificate.subject.rfc4514_string(), "CN=Manufacturer CA"]
        assert not Certificate.objects.filter(purpose=CertificatePurpose.PORTAL).exists()

    def test_refuses_without_a_secret_or_with_half_a_certificate(
        self, ca: CertificateAuthority, settings, tmp_path: Path
    ) -> None:
        settings.PROXY_SECRET = ""
        with pytest.raises(CommandError, match="PROXY_SECRET is not set"):
            call_command("proxy_config", "--out", str(tmp_path), "--listen", "8443", "--upstream", "web:8000")
        settings.PROXY_SECRET = SECRET
        with pytest.raises(CommandError, match="both --server-cert and --server-key"):
            call_command("proxy_config", "--out", str(tmp_path), "--listen", "8443", "--upstream", "web:8000",
                         "--server-cert", str(tmp_path / "x.crt"))  # fmt: skip
        with pytest.raises(CommandError, match="not HOST:PORT"):
            call_command("proxy_config", "--out", str(tmp_path), "--listen", "8443", "--upstream", "web")
        assert not (tmp_path / "nginx.conf").exists()


@pytest.fixture
def front(ca: CertificateAuthority, broker_files: None, settings, tmp_path: Path) -> Iterator[Front]:
    with tls_front(
        ca, settings, tmp_path, DJANGO_SETTINGS_MODULE="tests.support.proxy_probe_settings"
    ) as running:
        yield running


def _shell(command: str) -> str:
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _curl(front: Front, path: str, *options: str) -> str:
    return _shell(" ".join(["curl", "-sS", "--fail-with-body", "--cacert", str(front.ca_file), *options,
                            f"{front.https}{path}"]))  # fmt: skip


def _client_files(tmp_path: Path, name: str) -> tuple[Path, Path]:
    issued = issue_certificate(name, key_type=KeyType.EC_P256)
    assert issued.private_key is not None
    certificate, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    certificate.write_text(issued.record.pem)
    key.write_bytes(
        issued.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certificate, key


def _forged_headers(certificate: Path, secret: str) -> list[str]:
    escaped = quote(certificate.read_text(), safe="")
    return ["-H", f"'X-Client-Cert: {escaped}'", "-H", "'X-Client-Verify: SUCCESS'",
            "-H", f"'X-Proxy-Secret: {secret}'"]  # fmt: skip


# gunicorn's processes share the test database: committed rows, no transaction held open by the
# test while they read it (as tests/devices/test_multiprocess.py does).
@pytest.mark.django_db(transaction=True)
class TestThroughNginx:
    def test_cacerts_reads_with_curl_base64_and_openssl(self, front: Front, ca: CertificateAuthority) -> None:
        printed = _shell(
            f"curl -sS --fail --cacert {front.ca_file} {front.https}/.well-known/est/cacerts"
            " | base64 -d | openssl pkcs7 -inform DER -print_certs"
        )
        assert x509.load_pem_x509_certificates(printed.encode()) == [ca.certificate]
        answer = httpx.get(
            f"{front.https}/.well-known/est/cacerts",
            verify=ssl.create_default_context(cafile=str(front.ca_file)),
        )
        assert answer.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
        assert answer.headers["content-transfer-encoding"] == "base64"

    def test_csrattrs_reads_with_openssl(self, front: Front) -> None:
        parsed = _shell(
            f"curl -sS --fail --cacert {front.ca_file} {front.https}/.well-known/est/csrattrs"
            " | base64 -d | openssl asn1parse -inform DER"
        )
        assert "id-ecPublicKey" in parsed and "rsaEncryption" in parsed and "ecdsa-with-SHA256" in parsed

    def test_a_client_certificate_from_the_ca_reaches_the_portal_verified(
        self, front: Front, tmp_path: Path
    ) -> None:
        certificate, key = _client_files(tmp_path, "front-device")
        assert _curl(front, "/probe/client-certificate", "--cert", str(certificate), "--key", str(key)) == (
            "CN=front-device"
        )
        assert _curl(front, "/probe/client-certificate") == "none"

    def test_headers_a_client_sends_are_replaced_by_nginx(self, front: Front, tmp_path: Path) -> None:
        """Even a client that knew the secret: nginx sets all three headers itself."""
        mine, my_key = _client_files(tmp_path, "honest-device")
        other, _ = _client_files(tmp_path, "other-device")
        forged = _forged_headers(other, front.secret)
        assert _curl(front, "/probe/client-certificate", *forged) == "none"
        assert _curl(
            front, "/probe/client-certificate", "--cert", str(mine), "--key", str(my_key), *forged
        ) == ("CN=honest-device")

    def test_a_certificate_from_another_ca_is_not_believed_verified(
        self, front: Front, tmp_path: Path
    ) -> None:
        """nginx lets it through (optional_no_ca: a factory certificate is the portal's to check
        against its enrolment groups) with the verdict FAILED, so it is no portal certificate."""
        _self_signed(tmp_path / "s", "stranger")
        assert (
            _curl(
                front,
                "/probe/client-certificate",
                "--cert",
                str(tmp_path / "s.crt"),
                "--key",
                str(tmp_path / "s.key"),
            )
            == "none"
        )

    def test_a_forged_header_straight_to_gunicorn_is_not_believed(self, front: Front, tmp_path: Path) -> None:
        certificate, _ = _client_files(tmp_path, "forged-device")
        escaped = quote(certificate.read_text(), safe="")
        headers = {"X-Client-Cert": escaped, "X-Client-Verify": "SUCCESS"}
        for secret in (None, "", "wrong-" + front.secret[6:]):
            sent = headers if secret is None else {**headers, "X-Proxy-Secret": secret}
            answer = httpx.get(f"{front.direct}/probe/client-certificate", headers=sent)
            assert answer.status_code == 200 and answer.text == "none", secret
        # The control: with the real secret (only nginx and the portal have it) it would be believed.
        real = httpx.get(
            f"{front.direct}/probe/client-certificate", headers={**headers, "X-Proxy-Secret": front.secret}
        )
        assert real.text == "CN=forged-device"


def test_a_secret_nginx_could_not_carry_stops_start_up(settings) -> None:
    from proxy.checks import check_proxy_secret

    settings.PROXY_SECRET = ""
    assert check_proxy_secret() == []
    settings.PROXY_SECRET = SECRET
    assert check_proxy_secret() == []
    for bad in ("too-short", 'quote"' + "x" * 40, "semi;" + "x" * 40):
        settings.PROXY_SECRET = bad
        assert [message.id for message in check_proxy_secret()] == ["proxy.E001"]
