"""What accounts tells the floors above it (chat listens: open sockets re-check their authority, chat.authority).

Sent after the change is committed (`transaction.on_commit`), with keyword arguments only.
"""
from django.dispatch import Signal

# workspace: Workspace, user_id: int — the member's role changed or they were removed
membership_changed = Signal()
