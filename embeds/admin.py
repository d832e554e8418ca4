from django.contrib import admin

from embeds.models import Embed


@admin.register(Embed)
class EmbedAdmin(admin.ModelAdmin):
    list_display = ("name", "public_key", "is_active", "language", "created_at")
    list_filter = ("is_active", "language")
    search_fields = ("name", "public_key")
    # The encrypted identity secret is never shown, not even as ciphertext.
    exclude = ("identity_secret_encrypted",)
    readonly_fields = ("public_key", "identity_secret_hint", "identity_secret_rotated_at", "key_rotated_at",
                       "deactivated_at", "created_at", "updated_at")
