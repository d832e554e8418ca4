"""Workspace export and import: one `.tar.gz` archive holding everything a workspace owns.

The archive:

    manifest.json                 format, workspace (slug, name, plan), the migrations its rows were written under,
                                  row counts per model, the parts each app added
    data/<app>.<model>.jsonl      every row of every workspace model, dependency order, Django's serialization
    users.json                    id → email of every user a row points at (user ids differ between platforms)
    <part>/...                    what higher apps add through `workspace_exporting` (documents: the original files
                                  and the vectors; accounts: memberships)

Export runs inside the workspace's schema and reads the models from the app registry, so a model added to any
workspace app is exported without touching this module (tenants is the lowest floor and imports none of them).
Import writes into a NEW, empty workspace: the rows keep their primary keys (so references between them and the
vectors' chunk ids hold), user references are matched by email to users of this platform (or cleared), and the
sequences are moved past the imported ids. An archive written under other migrations is refused: migrate first.
"""
from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import serializers
from django.core.management.color import no_style
from django.db import connection, models, transaction
from django.db.migrations.recorder import MigrationRecorder

from config.errors import ErrorCode, ValidationFailed
from tenants.signals import workspace_exporting, workspace_importing

FORMAT = "customercare-workspace"
FORMAT_VERSION = 1
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # a single file in an archive; guards against decompression bombs



class ArchiveWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar = tarfile.open(path, "w:gz")
        self.parts: dict[str, str] = {}

    def add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        self._tar.addfile(info, io.BytesIO(data))

    def add_json(self, name: str, value: Any) -> None:
        self.add_bytes(name, json.dumps(value, default=str, ensure_ascii=False).encode("utf-8"))

    def add_jsonl(self, name: str, rows: Iterable[Any]) -> int:
        buffer = io.BytesIO()
        count = 0
        for row in rows:
            buffer.write(json.dumps(row, default=str, ensure_ascii=False).encode("utf-8") + b"\n")
            count += 1
        self.add_bytes(name, buffer.getvalue())
        return count

    def add_file(self, name: str, source: Path) -> None:
        self._tar.add(str(source), arcname=name, recursive=False)

    def close(self) -> None:
        self._tar.close()


class ArchiveReader:
    def __init__(self, path: Path) -> None:
        try:
            self._tar = tarfile.open(path, "r:gz")
            self._members = {m.name: m for m in self._tar.getmembers()}
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise _invalid(f"Not a workspace archive ({type(exc).__name__}).") from None
        for member in self._members.values():
            if member.name.startswith("/") or ".." in Path(member.name).parts or not (member.isfile() or member.isdir()):
                raise _invalid("The archive holds a path outside itself or a link.", member=member.name)
            if member.size > MAX_MEMBER_BYTES:
                raise _invalid("A file in the archive is too large.", member=member.name)

    def names(self, prefix: str = "") -> list[str]:
        return [name for name, m in self._members.items() if m.isfile() and name.startswith(prefix)]

    def read(self, name: str) -> bytes:
        member = self._members.get(name)
        if member is None or not member.isfile():
            raise _invalid("The archive lacks a part.", member=name)
        handle = self._tar.extractfile(member)
        assert handle is not None
        return handle.read()

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError:
            raise _invalid("A part of the archive is not valid JSON.", member=name) from None

    def jsonl(self, name: str) -> Iterator[Any]:
        for number, line in enumerate(self.read(name).splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    raise _invalid("A line of the archive is not valid JSON.", member=name, line=number) from None

    def close(self) -> None:
        self._tar.close()


def _invalid(message: str, **details: Any) -> ValidationFailed:
    return ValidationFailed(message, code=ErrorCode.ARCHIVE_INVALID, details=details)


@dataclass
class ExportReport:
    path: str
    bytes: int
    counts: dict[str, int]
    parts: dict[str, str] = field(default_factory=dict)
    ms: float = 0.0


@dataclass
class ImportReport:
    counts: dict[str, int]
    parts: dict[str, str] = field(default_factory=dict)
    users_matched: int = 0
    users_unmatched: list[str] = field(default_factory=list)
    ms: float = 0.0


def workspace_models() -> list[type[models.Model]]:
    """Every concrete model stored in a workspace schema, in an order where referenced models come first."""
    labels = {apps.get_app_config(name.rsplit(".", 1)[-1]).label for name in settings.TENANT_APPS
              if name.rsplit(".", 1)[-1] not in {"contenttypes"}}
    app_list = [(apps.get_app_config(label), None) for label in sorted(labels)]
    ordered = serializers.sort_dependencies(app_list, allow_cycles=True)
    return [m for m in ordered if not m._meta.proxy and m._meta.managed and not m._meta.auto_created]


def _user_fields(model: type[models.Model]) -> list[models.Field]:
    user_model = get_user_model()
    return [f for f in model._meta.concrete_fields if f.is_relation and f.related_model is user_model]


def _applied_migrations(labels: set[str]) -> list[str]:
    recorder = MigrationRecorder(connection)
    return sorted(f"{app}.{name}" for app, name in recorder.applied_migrations() if app in labels)


def workspace_export(*, workspace: Any, path: Path) -> ExportReport:
    """Write the archive of the workspace whose schema is active on the connection (receivers of
    tenants.signals.workspace_exporting add their parts and return (part, description))."""
    started = time.perf_counter()
    if connection.schema_name != workspace.schema_name:
        raise ValueError("export runs inside the workspace's schema")
    model_list = workspace_models()
    labels = {m._meta.app_label for m in model_list}
    path.parent.mkdir(parents=True, exist_ok=True)
    archive = ArchiveWriter(path)
    counts: dict[str, int] = {}
    user_ids: set[int] = set()
    try:
        with transaction.atomic():  # one consistent snapshot of every table
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            for model in model_list:
                label = model._meta.label_lower
                user_fields = _user_fields(model)
                queryset = model._default_manager.order_by("pk")

                def rows(queryset=queryset, user_fields=user_fields) -> Iterator[dict[str, Any]]:
                    for obj in queryset.iterator(chunk_size=2000):
                        for f in user_fields:
                            value = getattr(obj, f.attname)
                            if value is not None:
                                user_ids.add(value)
                        yield serializers.serialize("python", [obj])[0]

                counts[label] = archive.add_jsonl(f"data/{label}.jsonl", rows())
            users = get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "email")
            archive.add_json("users.json", {str(pk): email for pk, email in users})
            manifest = {
                "format": FORMAT, "version": FORMAT_VERSION, "exported_at": datetime.now(UTC).isoformat(),
                "workspace": {"slug": workspace.slug, "name": workspace.name, "plan": workspace.plan,
                              "schema": workspace.schema_name},
                "migrations": _applied_migrations(labels),
                "models": [m._meta.label_lower for m in model_list],
                "counts": counts,
            }
            for _receiver, result in workspace_exporting.send(sender=workspace.__class__, workspace=workspace,
                                                              archive=archive):
                if isinstance(result, tuple):
                    archive.parts[result[0]] = result[1]
            manifest["parts"] = archive.parts
            archive.add_json("manifest.json", manifest)
    except BaseException:
        archive.close()
        path.unlink(missing_ok=True)
        raise
    archive.close()
    return ExportReport(path=str(path), bytes=path.stat().st_size, counts=counts, parts=dict(archive.parts),
                        ms=round((time.perf_counter() - started) * 1000, 1))


def archive_open(path: Path) -> tuple[ArchiveReader, dict[str, Any]]:
    """Open and check an archive: its format, version, and that it was written under this platform's migrations."""
    reader = ArchiveReader(path)
    try:
        manifest = reader.json("manifest.json")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise _invalid("Not a workspace archive.")
        if manifest.get("version") != FORMAT_VERSION:
            raise _invalid("This archive format version is not supported.", version=manifest.get("version"))
    except BaseException:
        reader.close()
        raise
    return reader, manifest


def migrations_check(manifest: dict[str, Any]) -> None:
    """Refuse an archive whose rows were written under migrations other than the ones applied here."""
    labels = {label.split(".")[0] for label in manifest.get("models", [])}
    here = _applied_migrations(labels)
    there = sorted(manifest.get("migrations", []))
    if here != there:
        raise ValidationFailed(
            "The archive was written under other migrations than this platform runs; migrate the older side first.",
            code=ErrorCode.ARCHIVE_INCOMPATIBLE,
            details={"missing_here": sorted(set(there) - set(here)), "missing_in_archive": sorted(set(here) - set(there))},
        )


def workspace_import(*, workspace: Any, reader: ArchiveReader, manifest: dict[str, Any], owner: Any) -> ImportReport:
    """Load an archive into the workspace whose (new, empty) schema is active on the connection."""
    started = time.perf_counter()
    if connection.schema_name != workspace.schema_name:
        raise ValueError("import runs inside the workspace's schema")
    migrations_check(manifest)
    known = {m._meta.label_lower: m for m in workspace_models()}
    order = [label for label in manifest.get("models", []) if label in known]
    unknown = [label for label in manifest.get("models", []) if label not in known]
    if unknown:
        raise _invalid("The archive holds models this platform does not have.", models=unknown)
    emails = {int(pk): email for pk, email in reader.json("users.json").items()}
    local = dict(get_user_model().objects.filter(email__in=emails.values()).values_list("email", "pk"))
    user_map = {old: local.get(email) for old, email in emails.items()}
    counts: dict[str, int] = {}
    with transaction.atomic():
        for label in reversed(order):  # whatever provisioning seeded gives way to the archive's rows
            known[label]._default_manager.all().delete()
        for label in order:
            model = known[label]
            user_fields = _user_fields(model)
            batch: list[models.Model] = []
            count = 0
            for row in reader.jsonl(f"data/{label}.jsonl"):
                if row.get("model") != label:
                    raise _invalid("A row belongs to another model than its file.", member=label)
                fields = row.get("fields", {})
                for f in user_fields:
                    old = fields.get(f.name)
                    if old is not None:
                        mapped = user_map.get(int(old))
                        fields[f.name] = mapped if mapped is not None or f.null else getattr(owner, "pk", None)
                try:
                    objects = list(serializers.deserialize("python", [row], ignorenonexistent=False))
                except serializers.base.DeserializationError as exc:
                    raise _invalid("A row could not be read.", member=label, error=str(exc)[:200]) from None
                batch.extend(obj.object for obj in objects)
                count += 1
                if len(batch) >= 1000:
                    model._default_manager.bulk_create(batch)
                    batch = []
            if batch:
                model._default_manager.bulk_create(batch)
            counts[label] = count
            if count != manifest.get("counts", {}).get(label, count):
                raise _invalid("The archive's row count does not match its manifest.", member=label)
        statements = connection.ops.sequence_reset_sql(no_style(), [known[label] for label in order])
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        parts: dict[str, str] = {}
        schema_map = {manifest["workspace"]["schema"]: workspace.schema_name}
        for _receiver, result in workspace_importing.send(sender=workspace.__class__, workspace=workspace,
                                                          archive=reader, manifest=manifest, schema_map=schema_map):
            if isinstance(result, tuple):
                parts[result[0]] = result[1]
    matched = sum(1 for value in user_map.values() if value is not None)
    return ImportReport(counts=counts, parts=parts, users_matched=matched,
                        users_unmatched=sorted(emails[old] for old, new in user_map.items() if new is None),
                        ms=round((time.perf_counter() - started) * 1000, 1))
