"""Settings for the onboarding portal.

Every value comes from the environment (or a `.env` file in the project root) through
django-environ. Development (`DEBUG=true`, as `make run` sets it) gets safe generated secrets;
anywhere else a missing secret stops start-up with one sentence saying what to set.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from kernel.secret_settings import generated_secret, optional_secret, private_dir, read_secret_file, secret

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG: bool = env.bool("DEBUG", default=False)
DEVELOPMENT = DEBUG

DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "var"))).resolve()


def _generated_in_development(filename: str) -> Path | None:
    """Where development keeps a generated secret; None elsewhere (a missing secret stops start-up)."""
    return DATA_DIR / filename if DEVELOPMENT else None


SECRET_KEY = secret(env, "SECRET_KEY", generated=_generated_in_development("secret_key"))
# A process that never touches the CA key (celery beat) runs without its passphrase when told
# so: CA_KEY_PASSPHRASE_REQUIRED=false. The key store then refuses to load or create a CA.
CA_KEY_PASSPHRASE = (
    secret(env, "CA_KEY_PASSPHRASE", generated=_generated_in_development("ca_passphrase"))
    if env.bool("CA_KEY_PASSPHRASE_REQUIRED", default=True)
    else ""
)


ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEVELOPMENT else []
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    # Model-change history (who changed which field of a device, rule or user, and when).
    "auditlog",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Request, response and latency metrics for /metrics (onboarding.metrics adds the product's).
    "django_prometheus",
    "accounts",
    "audit",
    "pki",
    "broker",
    "devices",
    "enrollment",
    "portal",
    # The TLS front's configuration (manage.py proxy_config) and the client-certificate check.
    "proxy",
    # Enrolment over Secure Transport (RFC 7030) under /.well-known/est/.
    "est",
]

MIDDLEWARE = [
    # First and (but for axes) last: every request is counted and timed for /metrics.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every answer (CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    # Static files straight from gunicorn (the admin's and the portal's), compressed and cached.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Ends signed-in sessions after SESSION_IDLE_TIMEOUT_SECONDS idle or
    # SESSION_ABSOLUTE_TIMEOUT_SECONDS in all; before OTP, so a timed-out user is anonymous.
    "portal.middleware.SessionTimeoutMiddleware",
    # Marks request.user as verified once a second factor (TOTP or backup code) was given.
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Model-change history learns the actor and the (trusted-proxy) client address.
    "portal.middleware.AuditlogActorMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into a refusal.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "accounts.backends.ModelPermissionBackend",
]

ROOT_URLCONF = "onboarding.urls"
WSGI_APPLICATION = "onboarding.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{private_dir(DATA_DIR) / 'devices.db'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Writers take the lock when their transaction begins and wait for each other (up to the
    # timeout) instead of failing with "database is locked" when a read turns into a write;
    # WAL lets readers carry on while one writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )
# PostgreSQL (psycopg 3): the password may come from a file (a Docker secret) instead of the URL.
if env.str("DATABASE_PASSWORD_FILE", default=""):
    DATABASES["default"]["PASSWORD"] = read_secret_file(
        env.str("DATABASE_PASSWORD_FILE"), "DATABASE_PASSWORD"
    )
# The database the test suite creates; unset: Django's default (in-memory for SQLite).
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default=None)}
# Connections are kept between requests (checked before reuse): opening one per request cost
# more than the request itself in the HTTP benchmark (bench_http).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Every call to another service has a bounded wait (DESIGN "Growing past one host"): a
# dependency that is down or frozen (accepts TCP, never answers) costs a request a few
# seconds and a 503 naming it, not a worker hung for minutes.
DATABASE_CONNECT_TIMEOUT_SECONDS: int = env.int("DATABASE_CONNECT_TIMEOUT_SECONDS", default=3)
DATABASE_STATEMENT_TIMEOUT_SECONDS: float = env.float("DATABASE_STATEMENT_TIMEOUT_SECONDS", default=30.0)
DATABASE_LOCK_TIMEOUT_SECONDS: float = env.float("DATABASE_LOCK_TIMEOUT_SECONDS", default=5.0)
# The client-side bound on each database call of a web or worker process (kernel/dbwatch.py):
# a server that freezes under an open connection is not bounded by anything else. Below the
# 10 s a request may take; far above the longest legitimate statement (CRL publication).
DATABASE_READ_TIMEOUT_SECONDS: float = env.float("DATABASE_READ_TIMEOUT_SECONDS", default=8.0)
# Checked here, not in a system check: the processes it bounds (gunicorn and Celery workers) run
# no system checks, and with a bound of 0 or less every database call would be cut at once.
if not DATABASE_READ_TIMEOUT_SECONDS > 0:
    raise ImproperlyConfigured(
        f"DATABASE_READ_TIMEOUT_SECONDS must be more than 0, not {DATABASE_READ_TIMEOUT_SECONDS}: "
        "without it a request waits forever on a database server that froze."
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _server_limits = " ".join(
        f"-c {name}={int(seconds * 1000)}"
        for name, seconds in (
            ("statement_timeout", DATABASE_STATEMENT_TIMEOUT_SECONDS),
            ("lock_timeout", DATABASE_LOCK_TIMEOUT_SECONDS),
        )
        if seconds > 0  # 0 leaves the server's own setting (a pooler that refuses `options`)
    )
    DATABASES["default"].setdefault("OPTIONS", {})
    # libpq's connect_timeout bounds opening a connection, startup exchange included; the
    # server-side limits end a query or a row-lock wait that runs too long (503 database_unavailable).
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", DATABASE_CONNECT_TIMEOUT_SECONDS)
    if _server_limits:
        DATABASES["default"]["OPTIONS"]["options"] = " ".join(
            part for part in (DATABASES["default"]["OPTIONS"].get("options", ""), _server_limits) if part
        )
# One cache for every process (Redis in production: CACHE_URL=redis://…), so API throttles
# count a client's requests across all gunicorn workers; per-process memory otherwise.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# Every Redis client the portal makes waits this long at most to connect and for each answer.
REDIS_CONNECT_TIMEOUT_SECONDS: float = env.float("REDIS_CONNECT_TIMEOUT_SECONDS", default=2.0)
REDIS_TIMEOUT_SECONDS: float = env.float("REDIS_TIMEOUT_SECONDS", default=2.0)
if "redis" in CACHES["default"]["BACKEND"].lower():
    CACHES["default"].setdefault("OPTIONS", {}).update(
        {"socket_connect_timeout": REDIS_CONNECT_TIMEOUT_SECONDS, "socket_timeout": REDIS_TIMEOUT_SECONDS}
    )
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # The same cache, whose outage is 503 `cache_unavailable` instead of 500 (kernel/cache.py).
    CACHES["default"]["BACKEND"] = "kernel.cache.RedisCache"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "staticfiles"))).resolve()
# The image collects static files at build time with hashed names (STATIC_MANIFEST=true, long
# cache lifetimes); without a manifest (development, tests) WhiteNoise serves the plain names.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("STATIC_MANIFEST", default=False)
        else "whitenoise.storage.CompressedStaticFilesStorage"
    },
}

# --- Transport security: Django's own settings, on by default outside development. ---
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=not DEVELOPMENT)
SESSION_COOKIE_SECURE: bool = env.bool("SESSION_COOKIE_SECURE", default=not DEVELOPMENT)
CSRF_COOKIE_SECURE: bool = env.bool("CSRF_COOKIE_SECURE", default=not DEVELOPMENT)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# HSTS outside development: a year, subdomains included, preload-ready (`check --deploy` asks
# for all three). Sent only on HTTPS answers; turn each down while first trying TLS.
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=0 if DEVELOPMENT else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEVELOPMENT)
SECURE_HSTS_PRELOAD: bool = env.bool("SECURE_HSTS_PRELOAD", default=not DEVELOPMENT)
# Behind a TLS-terminating proxy: the header and value it sets on HTTPS requests, e.g.
# `SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https`. Set it only when that proxy also
# strips the header from what clients send, or anyone could claim HTTPS.
_proxy_ssl_header: list[str] = env.list("SECURE_PROXY_SSL_HEADER", default=[])
# Checked here: the value decides the (header, value) pair Django's setting holds.
if _proxy_ssl_header:
    if len(_proxy_ssl_header) != 2 or not _proxy_ssl_header[0].startswith("HTTP_"):
        raise ImproperlyConfigured(
            "SECURE_PROXY_SSL_HEADER must be HEADER,VALUE with the header as Django names it, "
            "e.g. HTTP_X_FORWARDED_PROTO,https."
        )
    SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header[0], _proxy_ssl_header[1])
# Health checks and metric scrapes from inside the deployment speak plain HTTP to gunicorn.
# The CRL and the CA certificate are public, signed (or self-verifying) material that relying
# parties fetch over plain HTTP (RFC 5280 4.2.1.13, RFC 5019 and RFC 2585: an HTTPS distribution
# point would need revocation checking to fetch revocation data), so they are never redirected.
SECURE_REDIRECT_EXEMPT = [
    r"^health$",
    r"^api/v1/health$",
    r"^metrics$",
    r"^ca\.crl$",
    r"^crl\.pem$",
    r"^ca\.crt$",
    # The same CA certificate (RFC 7030 4.1.3) and the CSR policy (4.5): public, and read by a
    # device before it can check the portal's TLS certificate. Enrolment itself is never exempt.
    r"^\.well-known/est/cacerts$",
    r"^\.well-known/est/csrattrs$",
]

# --- TLS front (docs/deployment.md "TLS front (nginx)") ---
# The secret the nginx that `manage.py proxy_config` writes adds to every request it passes on.
# Only a request carrying it is believed about its TLS client certificate (proxy.client_cert);
# while it is empty (no such proxy in front), none is. Development generates one in DATA_DIR.
PROXY_SECRET: str = optional_secret(env, "PROXY_SECRET") or (
    generated_secret(DATA_DIR / "proxy_secret") if DEVELOPMENT else ""
)

# Content-Security-Policy (django-csp): the portal's pages load scripts, styles and images only
# from the portal itself, run no inline script or style and no plugin, cannot be framed, and post
# forms only to the portal. An injected <script> or onclick= does not run. The Swagger UI at
# /api/docs/ adds data: images (its icons) for its own page only (onboarding/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- Certificate authority ---
CA_ROOT_PATH = Path(env.str("CA_ROOT_PATH", default=str(DATA_DIR / "certs"))).resolve()
CERT_VALIDITY_DAYS: int = env.int("CERT_VALIDITY_DAYS", default=365)
CRL_VALIDITY_HOURS: int = env.int("CRL_VALIDITY_HOURS", default=72)
EXPIRY_WARNING_DAYS: int = env.int("EXPIRY_WARNING_DAYS", default=30)
# Renewal (EST simplereenroll): a device may renew once this share (in %) of its certificate's
# lifetime is left; the certificate it replaced stays valid RENEWAL_GRACE_HOURS more (0: revoked
# at once), then the revoke-superseded job revokes it. Checked by devices.checks.
RENEWAL_WINDOW_PERCENT: int = env.int("RENEWAL_WINDOW_PERCENT", default=33)
RENEWAL_GRACE_HOURS: int = env.int("RENEWAL_GRACE_HOURS", default=24)
# Expiry alerts go to the Operators' e-mail addresses; the console in development.
EMAIL_BACKEND: str = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEVELOPMENT
    else "django.core.mail.backends.smtp.EmailBackend",
)
DEFAULT_FROM_EMAIL: str = env.str("DEFAULT_FROM_EMAIL", default="onboarding@localhost")
EMAIL_HOST: str = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT: int = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER: str = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = optional_secret(env, "EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS: bool = env.bool("EMAIL_USE_TLS", default=False)
# Django's own: seconds the SMTP connection waits to connect and for each answer (None: forever).
EMAIL_TIMEOUT: float = env.float("EMAIL_TIMEOUT", default=10.0)
PORTAL_URL: str = env.str("PORTAL_URL", default="http://127.0.0.1:8000").rstrip("/")
# Written into every device certificate's CRL distribution point. RFC 5280 4.2.1.13: an HTTP
# URI there MUST name a DER CRL, which /ca.crl serves; /crl.pem serves the same CRL as PEM.
CRL_URL: str = env.str("CRL_URL", default=f"{PORTAL_URL}/ca.crl")
# Origins whose unsafe requests (sign-in, portal forms) pass the CSRF check besides the
# request's own host: the public HTTPS address when a proxy in front changes host or scheme.
CSRF_TRUSTED_ORIGINS: list[str] = env.list(
    "CSRF_TRUSTED_ORIGINS", default=[PORTAL_URL] if PORTAL_URL.startswith("https://") else []
)
# Lock files for writers that must serialise across processes (CRL, ACL) on SQLite.
LOCK_DIR = DATA_DIR / "locks"
# How long a CRL or ACL writer waits for another process's lock before failing (503).
LOCK_TIMEOUT_SECONDS: float = env.float("LOCK_TIMEOUT_SECONDS", default=30.0)

# --- Credential delivery and broker (see docs/deployment.md "Settings") ---
DOWNLOAD_EXPIRY_MINUTES: int = env.int("DOWNLOAD_EXPIRY_MINUTES", default=30)
# Enrolment codes (EST simpleenroll with HTTP Basic): how long one stays usable, and the
# per-device lockout after repeated wrong, used or expired codes.
ENROLLMENT_CODE_DAYS: int = env.int("ENROLLMENT_CODE_DAYS", default=30)
ENROLLMENT_CODE_MAX_FAILURES: int = env.int("ENROLLMENT_CODE_MAX_FAILURES", default=5)
ENROLLMENT_CODE_LOCKOUT_MINUTES: int = env.int("ENROLLMENT_CODE_LOCKOUT_MINUTES", default=15)
BROKER_BACKEND: str = env.str("BROKER_BACKEND", default="mosquitto_acl")
# mosquitto_dynsec: the plugin library (default: found where Debian's mosquitto puts it).
MOSQUITTO_DYNSEC_PLUGIN: str = env.str("MOSQUITTO_DYNSEC_PLUGIN", default="")
BROKER_ACL_FILE = Path(env.str("BROKER_ACL_FILE", default=str(DATA_DIR / "mosquitto.acl"))).resolve()
# The broker's own copy of the CRL, checked before it replaces the previous one: a broker
# given a damaged CRL stops checking revocation, one given an expired CRL refuses everyone.
BROKER_CRL_FILE = Path(env.str("BROKER_CRL_FILE", default=str(DATA_DIR / "mosquitto-crl.pem"))).resolve()
# How the portal tells Mosquitto to reload: SIGHUP to the PID in this file, or this command.
MOSQUITTO_PID_FILE: str = env.str("MOSQUITTO_PID_FILE", default="")
BROKER_RELOAD_COMMAND: str = env.str("BROKER_RELOAD_COMMAND", default="")
# Monitoring certificates for the /health broker probe live here (keys encrypted).
BROKER_PROBE_DIR = Path(env.str("BROKER_PROBE_DIR", default=str(DATA_DIR / "broker-probe"))).resolve()
# The broker's address comes from the listener `mosquitto_config` wrote (see broker/address.py);
# these override it when set. What devices connect to (written into every credential bundle;
# unset and no broker configured yet: 127.0.0.1:8883):
BROKER_PUBLIC_HOST: str | None = env.str("BROKER_PUBLIC_HOST", default=None)
BROKER_PUBLIC_PORT: int | None = env.int("BROKER_PUBLIC_PORT", default=None)
# Where the portal itself reaches the broker (probe, revocation check; default: the public address).
BROKER_PROBE_HOST: str | None = env.str("BROKER_PROBE_HOST", default=None)
BROKER_PROBE_PORT: int | None = env.int("BROKER_PROBE_PORT", default=None)
# How long the portal waits for the MQTT broker to accept a connection (TCP and TLS handshake)
# and to acknowledge it (CONNACK, SUBACK) in the health probe and the dynamic-security session.
BROKER_TIMEOUT_SECONDS: float = env.float("BROKER_TIMEOUT_SECONDS", default=2.0)
# How long the dynamic-security session waits for the answers to one batch of commands.
BROKER_COMMAND_TIMEOUT_SECONDS: float = env.float("BROKER_COMMAND_TIMEOUT_SECONDS", default=30.0)

# --- Two-factor sign-in (django-otp) ---
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="IoT Onboarding Portal")

# Repeated password failures lock out that user name from that address for a while
# (django-axes). Locking the pair, not the user name alone, means an attacker cannot lock a
# colleague out from elsewhere, nor lock everyone out from one address.
AXES_FAILURE_LIMIT: int = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = datetime.timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=30))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "kernel.addresses.client_address"
# Failed API token authentications (unknown, expired or revoked tokens) are counted per client
# address (accounts.authentication): past the limit within the window, that address gets 429
# for every token until the window ends, so guessing is slow and nobody is locked out for long.
API_TOKEN_FAILURE_LIMIT: int = env.int("API_TOKEN_FAILURE_LIMIT", default=20)
API_TOKEN_FAILURE_WINDOW_SECONDS: int = env.int("API_TOKEN_FAILURE_WINDOW_SECONDS", default=60)

# --- Operator portal sessions (portal/) ---
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
# A signed-in session ends after this long without a request, and this long after sign-in
# whatever happens; both send the user back through password and second factor.
SESSION_IDLE_TIMEOUT_SECONDS: int = env.int("SESSION_IDLE_TIMEOUT_SECONDS", default=15 * 60)
SESSION_ABSOLUTE_TIMEOUT_SECONDS: int = env.int("SESSION_ABSOLUTE_TIMEOUT_SECONDS", default=8 * 60 * 60)
SESSION_COOKIE_AGE = SESSION_ABSOLUTE_TIMEOUT_SECONDS
# Bulk registrations run in a thread of the web process (the result's key never leaves it);
# tests run them inside the request instead.
PORTAL_BULK_RUN_INLINE: bool = env.bool("PORTAL_BULK_RUN_INLINE", default=False)
PORTAL_BULK_MAX_ROWS: int = env.int("PORTAL_BULK_MAX_ROWS", default=1000)

# --- REST API ---
API_MAX_BODY_BYTES: int = env.int("API_MAX_BODY_BYTES", default=64 * 1024)
# Objects and arrays nested deeper than this are refused (400 json_too_deep): parsing, validation
# and storage all recurse once per level, and metadata needs a handful.
API_MAX_JSON_DEPTH: int = env.int("API_MAX_JSON_DEPTH", default=32)
API_THROTTLE_RATES: dict[str, str] = {
    "anon": env.str("API_THROTTLE_ANON", default="60/minute"),
    "user": env.str("API_THROTTLE_USER", default="6000/minute"),
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "accounts.authentication.VerifiedSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttles.AnonymousThrottle", "api.throttles.UserThrottle"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.handlers.exception_handler",
    # Throttles identify clients by address: trust X-Forwarded-For only from this many proxies
    # (0: the socket's address), or anyone could pick a fresh identity per request.
    "NUM_PROXIES": env.int("TRUSTED_PROXY_COUNT", default=0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "IoT Device Onboarding API",
    "DESCRIPTION": "Register, inspect and revoke devices; every error is JSON with a code and a message.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from static files we serve, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The paths as documented (the server also answers them with a trailing slash).
    "PREPROCESSING_HOOKS": ["devices.api.schema.documented_paths"],
    "ENUM_NAME_OVERRIDES": {
        "DeviceStatus": "devices.models.DeviceStatus",
        "CertificateStatus": "pki.models.CertificateStatus",
        # The reasons as the API names them (the serializers' choices): values, not Enum members.
        "RevocationReason": "onboard_cli.vocabulary.REVOCATION_REASONS",
    },
}

# Lifetime of a token made by `create_api_token` unless told otherwise (--expires-days, --no-expiry).
API_TOKEN_DEFAULT_DAYS: int = env.int("API_TOKEN_DEFAULT_DAYS", default=365)

# --- Celery: without a broker URL tasks run in-process (development needs no Redis). ---
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task is acknowledged when it has finished, and a worker killed mid-task hands it back:
# provisioning is idempotent (a status guard), so a second run signs nothing twice.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A message taken by a worker that died is delivered again once it is this many seconds old,
# at the next sweep of the workers (every CELERY_UNACKED_SWEEP_SECONDS). A task still running
# then runs twice; provisioning's status guard makes the second run sign nothing.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=300),
    "unacked_restore_interval": env.int("CELERY_UNACKED_SWEEP_SECONDS", default=10),
    "unacked_restore_throttle": 1,
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_SECONDS,
    "socket_timeout": REDIS_TIMEOUT_SECONDS,
}
# A web request that cannot reach Redis, or finds it frozen, fails within a few seconds (503
# task_queue_unavailable), not after minutes: one retry for publishing a task...
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_CONNECT_TIMEOUT_SECONDS
# ... and the same bounds for the result backend, which subscribes to each task's result when
# it is sent. Celery's defaults there are no socket timeout at all (a frozen Redis hangs the
# request for good) and 20 reconnection attempts a second apart (a stopped one: 19 s, then
# RuntimeError).
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = REDIS_CONNECT_TIMEOUT_SECONDS
CELERY_REDIS_SOCKET_TIMEOUT = REDIS_TIMEOUT_SECONDS
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
}
# Broker changes from workers are pushed once per burst: the first change schedules a sync
# this many seconds later, and changes until it starts ride along (broker.dispatch).
BROKER_SYNC_DEBOUNCE_SECONDS: float = env.float("BROKER_SYNC_DEBOUNCE_SECONDS", default=0.2)
BROKER_SYNC_MARKER_SECONDS = 60
# A broker sync that failed asks again this much later (the changes stay pending meanwhile).
BROKER_SYNC_RETRY_SECONDS: float = env.float("BROKER_SYNC_RETRY_SECONDS", default=30)
# The broker catch-up (broker.dispatch.catch_up_broker) brings the broker in step with changes
# a crashed process committed but never pushed: at the start of every web and worker process
# (BROKER_CATCH_UP_AT_START), then every BROKER_CATCH_UP_SECONDS (celery beat; without workers,
# a thread of each web process). Revocation must reach the broker within a minute unattended.
BROKER_CATCH_UP_AT_START: bool = env.bool("BROKER_CATCH_UP_AT_START", default=True)
BROKER_CATCH_UP_SECONDS: int = env.int("BROKER_CATCH_UP_SECONDS", default=60)
# Checked here: the value decides CELERY_BEAT_SCHEDULE below, and celery beat, which runs it,
# runs no system checks.
if not 1 <= BROKER_CATCH_UP_SECONDS <= 60:
    raise ImproperlyConfigured(
        f"BROKER_CATCH_UP_SECONDS must be between 1 and 60, not {BROKER_CATCH_UP_SECONDS}: a revoked "
        "device the broker does not refuse yet must be caught up within a minute."
    )
CELERY_RESULT_BACKEND: str = env.str("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)
# Periodic jobs (celery beat). The CRL job checks every 15 minutes and re-signs at half the
# CRL's validity, so a CRL never reaches nextUpdate even when nothing is revoked.
CELERY_BEAT_SCHEDULE = {
    "refresh-crl": {"task": "onboarding.refresh_crl", "schedule": 15 * 60},
    "cleanup-bundles": {"task": "onboarding.cleanup_bundles", "schedule": 10 * 60},
    "expire-certificates": {"task": "onboarding.expire_certificates", "schedule": 60 * 60},
    "sync-broker": {"task": "onboarding.sync_broker", "schedule": 60 * 60},
    "catch-up-broker": {"task": "onboarding.catch_up_broker", "schedule": BROKER_CATCH_UP_SECONDS},
    "expiry-alerts": {"task": "onboarding.expiry_alerts", "schedule": 6 * 60 * 60},
    "revoke-superseded": {"task": "onboarding.revoke_superseded", "schedule": 10 * 60},
}

# --- Metrics: GET /metrics for Prometheus (onboarding.metrics) ---
# A scraper is admitted with `Authorization: Bearer <METRICS_TOKEN>` or from an address in
# METRICS_ALLOWED_NETWORKS (CIDR list); with neither set, /metrics answers 403 to everyone.
METRICS_TOKEN = optional_secret(env, "METRICS_TOKEN")
# Each must be a network or an address (system check onboarding.E001, onboarding/checks.py).
METRICS_ALLOWED_NETWORKS: list[str] = env.list("METRICS_ALLOWED_NETWORKS", default=[])

# --- Logging: LOG_FORMAT=json gives one JSON object per line (production); plain otherwise.
# Every line goes through a filter that scrubs tokens, private keys and download links. ---
LOG_FORMAT: str = env.str("LOG_FORMAT", default="plain")
# Checked here: the value decides LOGGING below, which Django applies before any check runs.
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not '{LOG_FORMAT}'.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "kernel.logs.JsonFormatter"},
    },
    "filters": {"redact_secrets": {"()": "kernel.logs.RedactSecrets"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # Django's own handlers (an unfiltered console in development, its runserver access log,
    # mail to ADMINS) would print "Not Found: /download/<token>" and every request line as they
    # came: naming the loggers here removes those handlers, so their records reach the root's
    # redacting handler like everyone else's.
    "loggers": {
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": [], "level": "INFO", "propagate": True},
    },
}
