"""Loaded as a pytest plugin (`-p tests.support.environment`) before Django reads its settings.

It fills the environment the way an operator would, so the suite runs the real
`onboarding.settings` with a private DATA_DIR and test secrets: no parallel settings file.
"""

import os
import tempfile

os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="onboarding-test-"))
# WhiteNoise serves STATIC_ROOT (collected in the image); here it is empty but present.
os.makedirs(os.path.join(os.environ["DATA_DIR"], "staticfiles"), exist_ok=True)
# On SQLite, a file, not shared-cache memory: threads of a live server then wait for each
# other's locks as they do in production instead of failing with "database table is locked".
# With DATABASE_URL naming PostgreSQL (`make test-postgres`) Django names the test database
# itself: test_<name>.
if os.environ.get("DATABASE_URL", "sqlite:").startswith("sqlite:"):
    os.environ.setdefault("TEST_DATABASE_NAME", os.path.join(os.environ["DATA_DIR"], "test.db"))
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("CA_KEY_PASSPHRASE", "test-ca-passphrase")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("API_THROTTLE_ANON", "100000/minute")
os.environ.setdefault("API_THROTTLE_USER", "100000/minute")
