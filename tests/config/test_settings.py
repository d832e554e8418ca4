"""Settings come from the environment; production refuses to start without its secrets and passes check --deploy."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.live import BASE_DIR

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "x" * 20 + "production-secret-key-with-enough-entropy-0123456789",
    "DJANGO_ALLOWED_HOSTS": ".customercare.example",
    "DATABASE_URL": "postgres://app:pw@db.internal:5432/customercare",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "FIELD_ENCRYPTION_KEY": "Pj8R6cWl3mC1t0aXo5sQd1q2b3e4f5g6h7i8j9k0l1M=",
    "BASE_DOMAIN": "customercare.example",
    "CCGPT_DATA_DIR": "/nonexistent-data-dir",  # never pick up a developer's services.env
    "EMAIL_URL": "smtp+tls://mailer:mail-pw@smtp.internal:587",
}


def run_django(env_overrides: dict[str, str], code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV and not k.startswith("EMAIL_")}
    env.update({k: v for k, v in env_overrides.items() if v is not None})
    return subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)


SETUP = "import django; django.setup(); print('started')"


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL",
                                     "FIELD_ENCRYPTION_KEY", "EMAIL_URL"])
def test_production_refuses_to_start_without(missing):
    env = {**PRODUCTION_ENV, missing: None}
    result = run_django(env, SETUP)
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr and missing in result.stderr


def test_production_starts_with_everything_set():
    assert run_django(PRODUCTION_ENV, SETUP).stdout.strip() == "started"


def test_check_deploy_is_clean_with_production_settings():
    # The test run sets DJANGO_ALLOW_ASYNC_UNSAFE for Playwright; a deployment never does.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update(PRODUCTION_ENV)
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=BASE_DIR,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_environment_overrides_local_defaults(tmp_path):
    code = "import django; django.setup(); from django.conf import settings; print(settings.BASE_DOMAIN, settings.DATABASES['default']['NAME'], settings.DEBUG)"
    result = run_django({"DJANGO_SETTINGS_MODULE": "config.settings.local", "BASE_DOMAIN": "example.test",
                         "DATABASE_URL": "postgres://u@h:5432/otherdb", "DJANGO_DEBUG": "false",
                         "CCGPT_DATA_DIR": str(tmp_path)}, code)
    assert result.stdout.split() == ["example.test", "otherdb", "False"], result.stderr


# --- fail closed: what runs without an explicit settings module is production --------------------------------------
SHOW_SETTINGS = "from django.conf import settings; print(settings.SETTINGS_MODULE, settings.DEBUG)"


@pytest.mark.parametrize("entry", ["manage.py", "config.asgi", "config.wsgi", "config.celery"])
def test_entry_points_default_to_production_settings(entry, tmp_path):
    if entry == "manage.py":
        code = "import sys; sys.argv = ['manage.py', 'check']; import runpy; runpy.run_path('manage.py', run_name='__main__')"
        started = f"import sys; sys.argv = ['manage.py', 'shell', '-c', {SHOW_SETTINGS!r}]; import runpy; runpy.run_path('manage.py', run_name='__main__')"
    else:
        code = started = f"import {entry}; {SHOW_SETTINGS}"
    # No settings module chosen and no secrets: the process refuses to start (it would have run with DEBUG on and
    # the repository's key before).
    bare = {"DJANGO_SETTINGS_MODULE": None, "CCGPT_DATA_DIR": str(tmp_path)}
    refused = run_django(bare, code)
    assert refused.returncode != 0 and "ImproperlyConfigured" in refused.stderr, refused.stdout + refused.stderr
    assert "DJANGO_SECRET_KEY" in refused.stderr
    result = run_django({**PRODUCTION_ENV, "DJANGO_SETTINGS_MODULE": None}, started)
    assert result.stdout.split()[-2:] == ["config.settings.production", "False"], result.stderr[-2000:]


def test_local_secret_key_is_generated_once_per_checkout_outside_the_repository(tmp_path):
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    local = {"DJANGO_SETTINGS_MODULE": "config.settings.local", "DJANGO_SECRET_KEY": None}
    first = run_django({**local, "CCGPT_DATA_DIR": str(tmp_path / "a")}, code)
    key = first.stdout.strip()
    assert first.returncode == 0 and len(key) >= 50, first.stderr[-2000:]
    stored = tmp_path / "a" / "secret_key"
    assert stored.read_text().strip() == key and (stored.stat().st_mode & 0o777) == 0o600
    assert run_django({**local, "CCGPT_DATA_DIR": str(tmp_path / "a")}, code).stdout.strip() == key  # kept
    other = run_django({**local, "CCGPT_DATA_DIR": str(tmp_path / "b")}, code).stdout.strip()
    assert len(other) >= 50 and other != key  # another checkout, another key
    for path in BASE_DIR.glob("config/settings/*.py"):
        assert key not in path.read_text()
    chosen = run_django({**local, "CCGPT_DATA_DIR": str(tmp_path / "a"), "DJANGO_SECRET_KEY": "k" * 60}, code)
    assert chosen.stdout.strip() == "k" * 60  # the environment still wins


# --- production mail: a real mail server, or no start -------------------------------------------------------------
SHOW_MAIL = ("import django; django.setup(); from django.conf import settings as s; "
             "print(s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER, s.EMAIL_HOST_PASSWORD, "
             "s.EMAIL_USE_TLS, s.EMAIL_USE_SSL)")
SMTP = "django.core.mail.backends.smtp.EmailBackend"


@pytest.mark.parametrize("mail, message", [
    ({"EMAIL_URL": "consolemail://"}, "delivers no mail"),
    ({"EMAIL_URL": None, "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}, "delivers no mail"),
    ({"EMAIL_URL": None, "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend"}, "delivers no mail"),
    ({"EMAIL_URL": None, "EMAIL_BACKEND": SMTP}, "EMAIL_HOST"),
    ({"EMAIL_URL": "smtp+tls://user:pw@:587"}, "EMAIL_HOST"),
    ({"EMAIL_URL": "carrier-pigeon://coop"}, "EMAIL_URL"),
    ({"EMAIL_URL": "smtp://h:not-a-port"}, "EMAIL_URL"),
    ({"EMAIL_URL": None, "EMAIL_HOST": "smtp.internal", "EMAIL_USE_TLS": "true", "EMAIL_USE_SSL": "true"}, "EMAIL_USE_SSL"),
])
def test_production_refuses_mail_that_goes_nowhere(mail, message):
    result = run_django({**PRODUCTION_ENV, **mail}, SHOW_MAIL)
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr and message in result.stderr, (
        result.stdout + result.stderr[-2000:])


@pytest.mark.parametrize("mail, expected", [
    ({}, [SMTP, "smtp.internal", "587", "mailer", "mail-pw", "True", "False"]),
    ({"EMAIL_URL": "smtp+ssl://a%40b.example:p%2Fw@mx.example"}, [SMTP, "mx.example", "465", "a@b.example", "p/w",
                                                                   "False", "True"]),
    ({"EMAIL_URL": None, "EMAIL_HOST": "relay.internal", "EMAIL_HOST_USER": "u", "EMAIL_HOST_PASSWORD": "p"},
     [SMTP, "relay.internal", "587", "u", "p", "True", "False"]),
])
def test_production_sends_mail_through_the_configured_server(mail, expected):
    result = run_django({**PRODUCTION_ENV, **mail}, SHOW_MAIL)
    assert result.stdout.split() == expected, result.stderr[-2000:]
