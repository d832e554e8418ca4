"""Vendor API keys at rest: AssistantSettings.providers becomes a ProvidersField (encrypts `api_key` on every write)
and the keys already stored in plain JSON are encrypted now (chat/providers/secrets.py). No schema change: the column
stays jsonb. Reversing decrypts them again (for a rollback of the code, with the same FIELD_ENCRYPTION_KEY)."""

import json

from django.db import migrations

import chat.models


def _rows(apps, schema_editor):
    AssistantSettings = apps.get_model("chat", "AssistantSettings")
    return AssistantSettings.objects.using(schema_editor.connection.alias).order_by("id")


def encrypt_provider_keys(apps, schema_editor):
    from chat.providers.secrets import providers_encrypt

    for row in _rows(apps, schema_editor):
        stored = providers_encrypt(row.providers)
        if stored != row.providers:
            # update(): get_prep_value encrypts (idempotent: values already encrypted are left alone).
            type(row).objects.using(schema_editor.connection.alias).filter(pk=row.pk).update(providers=stored)


def decrypt_provider_keys(apps, schema_editor):
    from chat.providers.secrets import SECRET_FIELDS, secret_decrypt

    for row in _rows(apps, schema_editor):
        entries = []
        for entry in row.providers if isinstance(row.providers, list) else []:
            if isinstance(entry, dict):
                entry = dict(entry)
                for name in SECRET_FIELDS:
                    if isinstance(entry.get(name), str):
                        entry[name] = secret_decrypt(entry[name])
                    entry.pop(f"{name}_hint", None)
            entries.append(entry)
        # Raw SQL: the model field would encrypt them again.
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"UPDATE {row._meta.db_table} SET providers = %s::jsonb WHERE id = %s",
                           [json.dumps(entries), row.pk])


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0003_handoff"),
    ]

    operations = [
        migrations.AlterField(
            model_name="assistantsettings",
            name="providers",
            field=chat.models.ProvidersField(blank=True, default=list),
        ),
        migrations.RunPython(encrypt_provider_keys, decrypt_provider_keys),
    ]
