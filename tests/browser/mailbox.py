"""Emails a live server sent with django.core.mail.backends.filebased, read back so a browser can follow links."""
from __future__ import annotations

import email
import email.policy
import re
import time
from email.message import EmailMessage
from pathlib import Path

# What the file-based backend writes between two messages of one connection.
_MESSAGE_SEPARATOR = b"\n" + b"-" * 79 + b"\n"


class Mailbox:
    """The messages the live server sent (django.core.mail.backends.filebased), read back from its folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def messages(self) -> list[EmailMessage]:
        found = []
        for path in sorted(self.folder.glob("*.log")):
            for chunk in path.read_bytes().split(_MESSAGE_SEPARATOR):
                if chunk.strip():
                    found.append(email.message_from_bytes(chunk.strip(b"\n"), policy=email.policy.default))
        return found

    def wait_for(self, *, to: str, subject_contains: str = "", timeout: float = 15) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages():
                if to in message.get("To", "") and subject_contains in message.get("Subject", ""):
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(f"no email to {to!r} within {timeout}s; got {[m['To'] for m in self.messages()]}")
            time.sleep(0.1)

    @staticmethod
    def body(message: EmailMessage) -> str:
        return message.get_body(preferencelist=("plain",)).get_content()

    def link(self, message: EmailMessage, path_prefix: str) -> str:
        match = re.search(rf"https?://[^\s/]+{re.escape(path_prefix)}\S*", self.body(message))
        if not match:
            raise AssertionError(f"no {path_prefix} link in:\n{self.body(message)}")
        return match.group(0)
