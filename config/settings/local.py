"""Local development: defaults that just work with `make run`."""
import os
import secrets

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import DATA_DIR, env


def _checkout_secret_key() -> str:
    """A key generated once per checkout and kept in DATA_DIR/secret_key (mode 0600), never in the repository: a key
    everyone can read would let anyone sign sessions and login hand-offs for every local install."""
    path = DATA_DIR / "secret_key"
    try:
        if not path.exists():
            DATA_DIR.mkdir(parents=True, exist_ok=True)
            draft = DATA_DIR / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(50))
            try:
                os.link(draft, path)  # atomic and never overwrites: processes starting together agree on one key
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        key = path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"Cannot keep the local secret key in {path} ({exc}); set DJANGO_SECRET_KEY "
                                   "or CCGPT_DATA_DIR to a writable folder") from exc
    if len(key) < 50:
        raise ImproperlyConfigured(f"{path} holds no usable secret key: delete it to have a new one generated")
    return key


DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or _checkout_secret_key()
WORKSPACE_POOL_REFILL = env.str("WORKSPACE_POOL_REFILL", default="celery")
