"""Argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane) instead of Django's heavier default.

Django's default (100 MiB, 8 lanes) costs ~0.2 s on a quiet core and several times that under load, which alone
would blow the signup budget (p50 ≤ 100 ms for a whole live workspace). OWASP's floor keeps hashes memory-hard;
stored hashes with other parameters are re-hashed on the next login (Django's must_update).
"""
from django.contrib.auth.hashers import Argon2PasswordHasher


class OwaspArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 2
    memory_cost = 19456
    parallelism = 1
