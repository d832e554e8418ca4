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

# Mail carries invitation and password-reset links: in production it must leave through a real mail server, never
# into stdout or a log (base.py's console default). EMAIL_URL (smtp+tls://user:password@host:587, smtps://...),
# else EMAIL_HOST with EMAIL_PORT / EMAIL_HOST_USER / EMAIL_HOST_PASSWORD / EMAIL_USE_TLS / EMAIL_USE_SSL, else an
# explicit EMAIL_BACKEND that delivers (a provider's package, e.g. anymail). Nothing of these: refuse to start.
_MAIL_NOWHERE = {
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
}
_SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
if env.str("EMAIL_URL", default=""):
    try:
        _email = env.email_url("EMAIL_URL")
    except (ImproperlyConfigured, ValueError) as exc:  # an unknown scheme, a port that is no number
        raise ImproperlyConfigured(f"EMAIL_URL is not a mail URL (smtp+tls://user:password@host:587): {exc}") from exc
    EMAIL_BACKEND = _email["EMAIL_BACKEND"]
    EMAIL_HOST = _email.get("EMAIL_HOST") or ""
    EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
    EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
    EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
    EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
    EMAIL_PORT = _email.get("EMAIL_PORT") or (465 if EMAIL_USE_SSL else 587 if EMAIL_USE_TLS else 25)
else:
    EMAIL_HOST = env.str("EMAIL_HOST", default="")
    EMAIL_BACKEND = env.str("EMAIL_BACKEND", default=_SMTP_BACKEND if EMAIL_HOST else "")
    EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
    EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
    EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
    EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=not EMAIL_USE_SSL)
    EMAIL_PORT = env.int("EMAIL_PORT", default=465 if EMAIL_USE_SSL else 587)
if not EMAIL_BACKEND:
    raise ImproperlyConfigured("EMAIL_URL (e.g. smtp+tls://user:password@smtp.example:587) or EMAIL_HOST must be set "
                               "in production: invitation and password-reset links must reach people, not logs")
if EMAIL_BACKEND in _MAIL_NOWHERE:
    raise ImproperlyConfigured(f"EMAIL_BACKEND {EMAIL_BACKEND} delivers no mail; set EMAIL_URL or EMAIL_HOST to a "
                               "mail server in production")
if EMAIL_BACKEND == _SMTP_BACKEND and not EMAIL_HOST:
    raise ImproperlyConfigured("EMAIL_HOST (or the host in EMAIL_URL) must be set for SMTP in production")
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL exclude each other: STARTTLS (587) or TLS (465)")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)  # a stuck mail server must not hold a request or task for ever

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
