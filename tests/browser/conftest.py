"""Browser tests: a live server of their own whose emails land in files, so the browser can follow their links."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.mailbox import Mailbox
from tests.live import BASE_DIR, LiveServer, start_live_server

LOG_DIR = BASE_DIR / ".data" / f"test-logs-{os.environ.get('TEST_DATABASE_NAME', 'test_customercare')}"


@pytest.fixture(scope="session")
def mail_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="session")
def mail_live_server(django_db_setup, django_db_blocker, mail_folder) -> Iterator[LiveServer]:
    """Like `live_server`, but the server's emails are written to `mail_folder`."""
    from django.db import connection

    with django_db_blocker.unblock():
        server = start_live_server(
            connection.settings_dict,
            LOG_DIR,
            extra_env={
                "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                "EMAIL_FILE_PATH": str(mail_folder),
            },
            name="asgi-mail",
        )
    yield server
    server.process.stop()


@pytest.fixture
def mailbox(mail_folder) -> Mailbox:
    return Mailbox(mail_folder)
