"""Test settings: the same real services as local, with a database, Redis db and folders of their own.

TEST_DATABASE_NAME and TEST_REDIS_DB let several suites run side by side on one machine without sharing state.
"""
from urllib.parse import urlparse, urlunparse

from .base import *  # noqa: F401,F403
from .base import CHANNEL_LAYERS, CACHES, DATABASES, DATA_DIR, REDIS_URL, env

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="test-insecure-secret-key-0123456789abcdef0123456789")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
TEST_DATABASE_NAME = env.str("TEST_DATABASE_NAME", default="test_customercare")
DATABASES["default"]["TEST"] = {"NAME": TEST_DATABASE_NAME}

_redis = urlparse(REDIS_URL)
REDIS_URL = urlunparse(_redis._replace(path=f"/{env.int('TEST_REDIS_DB', default=1)}"))
CACHES["default"]["LOCATION"] = REDIS_URL
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [{"address": REDIS_URL}]
CELERY_BROKER_URL = REDIS_URL

MEDIA_ROOT = DATA_DIR / f"{TEST_DATABASE_NAME}-media"
CHROMA_PATH = DATA_DIR / f"{TEST_DATABASE_NAME}-chroma"
# Test processes are many and short-lived; a test that needs the warm-up turns it on (WARM_UP_ON_START=true).
WARM_UP_ON_START = env.bool("WARM_UP_ON_START", default=False)
WORKSPACE_POOL_SIZE = env.int("WORKSPACE_POOL_SIZE", default=3)
WORKSPACE_POOL_REFILL = env.str("WORKSPACE_POOL_REFILL", default="inline")
SIGNUP_THROTTLE = env.str("SIGNUP_THROTTLE", default="1000/h")
# The suite (fuzzing, isolation sweeps) makes thousands of API calls with one key; throttle tests override these.
API_THROTTLE_RATES = {scope: env.str(f"API_THROTTLE_{scope.split('_')[1].upper()}", default="100000/m")
                      for scope in ("api_key", "api_user", "api_anon")}
# Likewise past the free plan's 60 a minute: off here, on in tests/accounts/test_api_plan_limit.py.
API_PLAN_RATE_LIMITS = env.bool("API_PLAN_RATE_LIMITS", default=False)
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.locmem.EmailBackend")
LOG_LEVEL = env.str("LOG_LEVEL", default="WARNING")
LOGGING["root"]["level"] = LOG_LEVEL  # noqa: F405
LOGGING["loggers"]["django.request"] = {"level": "ERROR"}  # noqa: F405  (4xx are expected in tests)
