"""Hooks that higher floors register; tenants never imports them."""
from django.dispatch import Signal

# Sent inside workspace_delete before the schema is dropped; receivers remove what they keep outside the schema
# (vector collections, files). Arguments: workspace. Receivers return a short description of what they removed.
workspace_purging = Signal()

# Workspace export / import (tenants.portability), sent inside the workspace's schema. Export receivers add their
# parts to the archive: kwargs workspace, archive (ArchiveWriter); they return (part name, short description).
# Import receivers restore them: kwargs workspace, archive (ArchiveReader), manifest, schema_map ({old: new schema});
# they return (part name, short description) or None when the archive has nothing of theirs.
workspace_exporting = Signal()
workspace_importing = Signal()

# A workspace's status changed (suspended, reactivated), after the change is committed. Arguments: workspace, status.
# chat closes the workspace's open sockets (chat.authority).
workspace_status_changed = Signal()
