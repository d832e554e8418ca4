"""Production: no insecure defaults. Missing secrets stop the process with ImproperlyConfigured."""
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import env


def _required(name: str) -> str:
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(f"{name} must be set in production")
    return value


DEBUG = False
SECRET_KEY = _required("DJANGO_SECRET_KEY")
# Its own key, not one derived from SECRET_KEY: rotating the session secret must not lose the stored vendor keys.
FIELD_ENCRYPTION_KEY = _required("FIELD_ENCRYPTION_KEY")
try:
    from cryptography.fernet import Fernet

    [Fernet(key.strip().encode()) for key in FIELD_ENCRYPTION_KEY.split(",") if key.strip()]
except ValueError as exc:
    raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64 bytes), comma-separated") from exc
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must be set in production")
_required("DATABASE_URL")
_required("REDIS_URL")

PUBLIC_SCHEME = "https"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
WHITENOISE_USE_FINDERS = False
METRICS_REQUIRE_TOKEN = env.bool("METRICS_REQUIRE_TOKEN", default=True)
