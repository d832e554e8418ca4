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
}


def run_django(env_overrides: dict[str, str], code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV}
    env.update({k: v for k, v in env_overrides.items() if v is not None})
    return subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)


SETUP = "import django; django.setup(); print('started')"


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL",
                                     "FIELD_ENCRYPTION_KEY"])
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


def test_environment_overrides_local_defaults():
    code = "import django; django.setup(); from django.conf import settings; print(settings.BASE_DOMAIN, settings.DATABASES['default']['NAME'], settings.DEBUG)"
    result = run_django({"DJANGO_SETTINGS_MODULE": "config.settings.local", "BASE_DOMAIN": "example.test",
                         "DATABASE_URL": "postgres://u@h:5432/otherdb", "DJANGO_DEBUG": "false",
                         "CCGPT_DATA_DIR": "/nonexistent-data-dir"}, code)
    assert result.stdout.split() == ["example.test", "otherdb", "False"], result.stderr
