from django.contrib.auth.hashers import check_password, get_hasher, make_password
from django.test import override_settings

OWASP = ["accounts.hashers.OwaspArgon2PasswordHasher"]


@override_settings(PASSWORD_HASHERS=OWASP)
def test_passwords_are_argon2id_with_owasp_parameters():
    encoded = make_password("Correct-horse-battery-9")
    assert encoded.startswith("argon2$argon2id$v=19$m=19456,t=2,p=1$")
    assert check_password("Correct-horse-battery-9", encoded)
    assert not check_password("wrong", encoded)


@override_settings(PASSWORD_HASHERS=OWASP)
def test_hashes_with_django_default_parameters_still_verify_and_get_upgraded():
    from django.contrib.auth.hashers import Argon2PasswordHasher

    legacy = Argon2PasswordHasher().encode("Correct-horse-battery-9", Argon2PasswordHasher().salt())
    assert check_password("Correct-horse-battery-9", legacy)
    assert get_hasher("default").must_update(legacy)  # Django re-hashes with the preferred hasher on login
