from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('embeds', '0003_starter_questions_leads'),
    ]

    operations = [
        migrations.AddField(
            model_name='embed',
            name='show_followups',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='embed',
            name='question_coverage',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
