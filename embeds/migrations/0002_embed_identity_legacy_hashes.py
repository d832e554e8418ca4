# Identity hashes gain a timestamp (docs/widget.md "Identity verification"). Widgets that verified identities before
# keep accepting the old form until their owner turns it off; new widgets never accept it.

from django.db import migrations, models


def legacy_on_where_identity_was_on(apps, schema_editor):
    Embed = apps.get_model("embeds", "Embed")
    Embed.objects.exclude(identity_secret_encrypted="").update(identity_legacy_hashes=True)


class Migration(migrations.Migration):

    dependencies = [
        ("embeds", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="embed",
            name="identity_legacy_hashes",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(legacy_on_where_identity_was_on, migrations.RunPython.noop),
    ]
