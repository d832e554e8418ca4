"""Platform-wide throttles of the doors that take a secret or send mail: every login form (the product's public and
workspace logins, and the Django admin's) and password-reset requests.

Counted in Redis by config.throttle, not per host: one budget per e-mail and per client address (config.client_ip)
across every host.
"""
from __future__ import annotations

from django.conf import settings

from config.throttle import throttle_check, throttle_hit, throttle_reset


def login_throttle_wait(*, email: str, ip: str) -> int:
    """Seconds to wait before this e-mail may try a password from this address again, or 0."""
    for scope, ident in (("login-email", email.lower()), ("login-ip", ip)):
        state = throttle_check(scope, ident, settings.LOGIN_THROTTLE)
        if not state.allowed:
            return state.retry_after
    return 0


def login_failure_record(*, email: str, ip: str) -> None:
    throttle_hit("login-email", email.lower(), settings.LOGIN_THROTTLE)
    throttle_hit("login-ip", ip, settings.LOGIN_THROTTLE)


def login_success_record(*, email: str) -> None:
    throttle_reset("login-email", email.lower())


def password_reset_throttle_take(*, email: str, ip: str) -> int:
    """Count one reset request; seconds to wait when the address or the e-mail has asked too often, else 0. A
    refused request is not counted. The same for addresses with and without an account (nothing to learn here)."""
    checks = (("password-reset-ip", ip, settings.PASSWORD_RESET_THROTTLE_IP),
              ("password-reset-email", email.lower(), settings.PASSWORD_RESET_THROTTLE_EMAIL))
    for scope, ident, rate in checks:
        state = throttle_check(scope, ident, rate)
        if not state.allowed:
            return state.retry_after
    for scope, ident, rate in checks:
        throttle_hit(scope, ident, rate)
    return 0
