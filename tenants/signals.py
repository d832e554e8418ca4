"""Hooks that higher floors register; tenants never imports them."""
from django.dispatch import Signal

# Sent inside workspace_delete before the schema is dropped; receivers remove what they keep outside the schema
# (vector collections, files). Arguments: workspace. Receivers return a short description of what they removed.
workspace_purging = Signal()
