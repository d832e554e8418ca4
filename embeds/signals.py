"""What the widget tells the floor above it (analytics listens). Sent inside the workspace schema."""
from django.dispatch import Signal

# embed: EmbedCode, origin: str, visitor_id: str
widget_opened = Signal()
