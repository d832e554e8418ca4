"""A small, real knowledge base for answer tests: documents typed in through the real service and indexed by the
real pipeline (parse → chunk → embed with the real model → Chroma + PostgreSQL full text), run in this process.

Each test module builds its own workspaces (never the session's shared one), so counts elsewhere are unaffected.
"""
from __future__ import annotations


from django.db import connection

from tests.factories import WorkspaceWithOwner, workspace_with_owner

ROUTER_DOCS: dict[str, str] = {
    "Resetting the router": """# Resetting the router

## Factory reset
To restore the factory settings, press and hold the recessed Reset button on the back of the NetBox 500 for ten
seconds, until the power light blinks amber. The router restarts with the default admin password printed on the
label under the device. All your Wi-Fi names, passwords and port forwarding rules are erased.

## Restarting without losing settings
If the router is only slow, unplug it for thirty seconds and plug it back in. Your settings are kept.
""",
    "Wi-Fi setup": """# Wi-Fi setup

## Changing the network name and password
Open the admin page at http://192.168.8.1, sign in, and choose Wireless > Basic. Enter the new network name (SSID)
and a password of at least twelve characters, then press Save. Devices must reconnect with the new password.

## Choosing a channel
In crowded buildings, set the 5 GHz band to channel 36 or 149 under Wireless > Advanced to avoid interference.
""",
    "Firmware updates": """# Firmware updates

The NetBox 500 checks for new firmware every night at 03:00 and installs it automatically while nobody is online.
To update by hand, open System > Firmware on the admin page and press Check now. Never unplug the router while the
update runs; it takes about four minutes.

## Error codes
Error E-4711 means the firmware file failed its signature check: download it again from the official site.
Error E-2001 means there was not enough free memory; restart the router and retry.
""",
    "Billing and refunds": """# Billing and refunds

You can cancel a NetBox Care subscription at any time from the Account page. Annual plans are refunded in full within
30 days of purchase; after that, the unused months are credited to your account. Refunds reach your card within
five to ten business days.
""",
    "Port forwarding": """# Port forwarding

To make a game server or camera reachable from the internet, open Advanced > NAT > Port forwarding, press Add, and
enter the external port, the internal IP address of the device and its internal port, for example 8080 to
192.168.8.20 port 80. Press Save; the rule works immediately.
""",
    "Parental controls": """# Parental controls

## Schedules
Parental controls let you pause internet access for chosen devices on a schedule. Open Family > Schedules, pick a
device, and set the hours when it may go online.

## Schedules for school nights
Schedules can differ per weekday. For school nights, choose Family > Schedules, pick the device and set the hours
for Sunday to Thursday.

## Schedules for weekends
Schedules can differ per weekday. For weekends, choose Family > Schedules, pick the device and set the hours for
Friday and Saturday.

## Schedules for holidays
Schedules can differ per weekday. For holidays, choose Family > Schedules, pick the device and set holiday hours.
""",
}

# Only in the other workspace: a word and a topic workspace A must never see.
OTHER_DOCS: dict[str, str] = {
    "Safari cancellations": """# Safari cancellations

Zebra Tours refunds a cancelled safari booking in full up to 48 hours before departure. The booking code ZQXWV-PLUM
appears on every confirmation email; quote it when you call us.
""",
}
OTHER_SECRET = "ZQXWV"


def documents_index(docs: dict[str, str]) -> list[int]:
    """Type the documents in through the service and run the real pipeline for each, in the current schema."""
    from documents import services
    from documents.models import Document, DocumentStatus
    from tests.factories import document_ingest_now

    ids = []
    for title, text in docs.items():
        document = services.document_create_text(title=title, text=text, markdown=True)
        document_ingest_now(document)
        document.refresh_from_db()
        assert document.status == DocumentStatus.INDEXED, (title, document.status, document.error_code)
        ids.append(document.pk)
    assert Document.objects.filter(pk__in=ids, status=DocumentStatus.INDEXED).count() == len(ids)
    return ids


def knowledge_workspace(name: str, docs: dict[str, str]) -> WorkspaceWithOwner:
    created = workspace_with_owner(name=name)
    connection.set_tenant(created.workspace)
    try:
        documents_index(docs)
    finally:
        connection.set_schema_to_public()
    return created
