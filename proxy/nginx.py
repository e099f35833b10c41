"""The nginx configuration of the portal's TLS front, rendered from plain values (pure).

nginx ends TLS, asks for an optional client certificate (devices use theirs for EST), and passes
every request to the portal's gunicorn processes with what Django needs to know about it. The
headers below are always *set* by nginx, never passed through from the client: `proxy_set_header`
replaces a client's header of the same name, and drops it when the value is empty (no client
certificate). Django believes them only when they carry the shared secret (proxy.client_cert).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# The headers nginx sets on every request it passes on (Django reads them as HTTP_X_...).
CLIENT_CERT_HEADER = "X-Client-Cert"  # the client certificate, PEM, URL-encoded
CLIENT_VERIFY_HEADER = "X-Client-Verify"  # SUCCESS, NONE or FAILED:reason
# Proves that the request came through this proxy (a header name, not a secret).
PROXY_SECRET_HEADER = "X-Proxy-Secret"  # noqa: S105

# A CSV of devices for bulk registration is at most 2 MiB (portal.forms); the rest is headroom
# for the multipart envelope.
MAX_BODY_SIZE = "4m"
# Longer than gunicorn's own worker timeout (deploy/gunicorn_config.py), so that gunicorn, not
# nginx, decides when a request took too long.
UPSTREAM_TIMEOUT_SECONDS = 130
# A device certificate's chain is the CA alone; an enrolment group's manufacturer chain may
# have intermediates.
CLIENT_VERIFY_DEPTH = 3

# Every value that ends up in the file is checked against these, so nothing can end a directive
# early (;), open a block ({), start a variable ($) or a comment (#).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*)"
_ADDRESS = rf"(?:{_HOST}|\d{{1,3}}(?:\.\d{{1,3}}){{3}}|\[[0-9A-Fa-f:.]+\])"
UPSTREAM_PATTERN = re.compile(rf"{_ADDRESS}:\d{{1,5}}")
LISTEN_PATTERN = re.compile(rf"(?:{_ADDRESS}:)?\d{{1,5}}")
HOSTNAME_PATTERN = re.compile(_HOST)
SECRET_PATTERN = re.compile(r"[A-Za-z0-9_\-.~+/=]{32,512}")
_SAFE_PATH = re.compile(r"[A-Za-z0-9_\-./+@:,]+")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class InvalidProxySetting(ValueError):
    """A value that cannot go into the nginx configuration as it is."""


@dataclass(frozen=True)
class ProxySettings:
    listen: str
    upstreams: tuple[str, ...]
    server_name: str
    certificate_file: Path
    key_file: Path
    client_ca_file: Path
    secret: str
    # Where nginx writes its pid file, error log and temporary files: anywhere the
    # user running nginx may write (the configuration directory unless it is read-only).
    run_dir: Path
    # The user worker processes run as when nginx starts as root; None: nginx's built-in default
    # (and nothing is written: an ordinary user's nginx would only warn about the directive).
    user: str | None = None
    # The error log on stderr (a container's log) instead of in the run directory.
    log_to_stderr: bool = False


def _port_ok(value: str) -> bool:
    return 0 < int(value.rsplit(":", 1)[-1]) < 65536


def validate(settings: ProxySettings) -> None:
    """Raise InvalidProxySetting for anything that would not be a plain nginx value."""
    if not LISTEN_PATTERN.fullmatch(settings.listen) or not _port_ok(settings.listen):
        raise InvalidProxySetting(f"--listen {settings.listen!r} is not PORT or ADDRESS:PORT.")
    if not settings.upstreams:
        raise InvalidProxySetting("At least one --upstream HOST:PORT is needed.")
    for upstream in settings.upstreams:
        if not UPSTREAM_PATTERN.fullmatch(upstream) or not _port_ok(upstream):
            raise InvalidProxySetting(f"--upstream {upstream!r} is not HOST:PORT.")
    if not HOSTNAME_PATTERN.fullmatch(settings.server_name):
        raise InvalidProxySetting(f"--hostname {settings.server_name!r} is not a host name.")
    if not SECRET_PATTERN.fullmatch(settings.secret):
        raise InvalidProxySetting(
            "PROXY_SECRET must be 32 to 512 characters of letters, digits and -_.~+/= "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')."
        )
    for path in (settings.certificate_file, settings.key_file, settings.client_ca_file, settings.run_dir):
        if not path.is_absolute() or not _SAFE_PATH.fullmatch(str(path)):
            raise InvalidProxySetting(f"{path} must be an absolute path of plain characters.")
    if settings.user is not None and not _USER.fullmatch(settings.user):
        raise InvalidProxySetting(f"--user {settings.user!r} is not a user name.")


def _proxied(settings: ProxySettings) -> str:
    """The directives of every location that passes requests on to the portal."""
    return f"""\
            proxy_pass http://portal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # Appends the peer's address: TRUSTED_PROXY_COUNT=1 makes the portal take that hop.
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Set here, whatever the client sent under these names (see proxy.client_cert).
            proxy_set_header {CLIENT_CERT_HEADER} $ssl_client_escaped_cert;
            proxy_set_header {CLIENT_VERIFY_HEADER} $ssl_client_verify;
            proxy_set_header {PROXY_SECRET_HEADER} "{settings.secret}";
            proxy_connect_timeout 10s;
            proxy_read_timeout {UPSTREAM_TIMEOUT_SECONDS}s;
            proxy_send_timeout {UPSTREAM_TIMEOUT_SECONDS}s;"""


def render_nginx_conf(settings: ProxySettings) -> str:
    """The whole nginx.conf: `nginx -c FILE` runs it as root or as an ordinary user."""
    validate(settings)
    run = settings.run_dir
    error_log = "stderr" if settings.log_to_stderr else f"{run}/error.log"
    servers = "\n".join(f"        server {upstream};" for upstream in settings.upstreams)
    user = f"user {settings.user};\n" if settings.user else ""
    proxied = _proxied(settings)
    return f"""\
# Written by `manage.py proxy_config`; run with `nginx -c <this file>` (add -g 'daemon off;' under
# a supervisor). It holds the proxy secret: keep it 0600, readable only by the user that starts nginx.
{user}worker_processes auto;
pid {run}/nginx.pid;
# Only `crit` and worse: from `error` down, nginx's lines quote the request line, and a path such
# as /download/<token> is a credential (the portal keeps no access log for the same reason).
error_log {error_log} crit;

events {{
    worker_connections 1024;
}}

http {{
    default_type application/octet-stream;
    server_tokens off;
    # No access log: request lines carry download tokens (see error_log above).
    access_log off;
    # Every path nginx writes to is under the run directory, not the packaged defaults
    # (/var/lib/nginx), so an ordinary user can run it.
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    client_max_body_size {MAX_BODY_SIZE};

    # The portal's web processes, taken in turn; one that fails is skipped for a while.
    upstream portal {{
{servers}
        keepalive 16;
    }}

    server {{
        listen {settings.listen} ssl;
        server_name {settings.server_name};

        ssl_certificate {settings.certificate_file};
        ssl_certificate_key {settings.key_file};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:portal_tls:10m;
        ssl_session_tickets off;

        # Devices may present a certificate (EST re-enrolment, zero-touch enrolment); nobody must.
        # nginx checks it against these CAs (the portal's, and any --client-ca) and passes the
        # verdict on (SUCCESS or FAILED:reason), but lets a certificate of any other CA through
        # too (optional_no_ca): a factory certificate is verified by the portal against the
        # enrolment groups in its database, so a new group works without reloading nginx.
        # Whether a certificate is still good (not revoked, not superseded) is for the portal to
        # decide against its database.
        ssl_client_certificate {settings.client_ca_file};
        ssl_verify_client optional_no_ca;
        ssl_verify_depth {CLIENT_VERIFY_DEPTH};

        # A client certificate nginx cannot accept at all (expired, not yet valid, bad signature;
        # optional_no_ca forgives only an unknown issuer) would end in nginx's own 400 "SSL
        # certificate error". It goes to the portal instead, with the verdict FAILED:<reason>: a
        # factory certificate refused by the portal is answered and audited as EST says (401),
        # and nothing believes a certificate that nginx did not verify (proxy.client_cert).
        error_page 495 = @portal;

        location / {{
{proxied}
        }}

        location @portal {{
{proxied}
        }}
    }}
}}
"""
