"""Reads of the leads visitors left in the widget's lead form (chat.models.Lead; written by
chat.services.conversation_lead_save): the list for the API and the CSV download (dashboard and API serve the same
file). Spreadsheets run cells starting with = + - @ (or tab / CR) as formulas, and a lead is the visitor's own
text, so such cells get a leading quote (OWASP "CSV injection")."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet

from chat.models import Lead

LEAD_CSV_HEADER = ("created_at", "conversation_id", "embed_id", "stage", "name", "email", "phone", "custom_label",
                   "custom_value")
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def lead_list(*, embed_id: int | None = None) -> QuerySet[Lead]:
    leads = Lead.objects.select_related("conversation").order_by("-created_at", "-id")
    if embed_id is not None:
        leads = leads.filter(embed_id=embed_id)
    return leads


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def lead_csv_lines(*, embed_id: int | None = None) -> Iterator[str]:
    """The leads as CSV lines, newest first, streamed (one query, iterated in chunks)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(row: Any) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_cell(value) for value in row])
        return buffer.getvalue()

    yield line(LEAD_CSV_HEADER)
    for lead in lead_list(embed_id=embed_id).iterator(chunk_size=500):
        yield line([lead.created_at.isoformat(), str(lead.conversation.public_id), lead.embed_id or "", lead.stage,
                    lead.name, lead.email, lead.phone, lead.custom_label, lead.custom_value])
