"""What the knowledge base tells the floors above it (analytics listens; see STYLE.md "The floors").

Sent inside the workspace schema, after the state change is committed, keyword arguments only. Receivers must be
quick and must never raise into the sender. (documents/signals.py holds the receivers of lower floors' signals.)
"""
from django.dispatch import Signal

# document: Document
document_ingested = Signal()
# document: Document, error_code: str
document_failed = Signal()
# source: Source, run: SourceRun — a website source's crawl or re-sync ended (run.status: completed, stopped,
# failed or cancelled; its counters and stop reason on the run)
source_synced = Signal()
