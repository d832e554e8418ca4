"""Local development: defaults that just work with `make run`."""
from .base import *  # noqa: F401,F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="local-dev-insecure-secret-key-change-me-0123456789abcdef")
WORKSPACE_POOL_REFILL = env.str("WORKSPACE_POOL_REFILL", default="celery")
