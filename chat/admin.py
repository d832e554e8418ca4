from django.contrib import admin

from chat.models import AssistantSettings, Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("role", "content", "answered", "provider", "model", "seq", "created_at")
    readonly_fields = fields
    can_delete = False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("public_id", "title", "status", "channel", "last_seq", "updated_at")
    list_filter = ("status", "channel")
    search_fields = ("title", "visitor_name", "visitor_email", "visitor_id")
    readonly_fields = ("public_id", "last_seq", "created_at", "updated_at")
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "role", "answered", "provider", "seq", "created_at")
    list_filter = ("role", "answered", "provider")
    search_fields = ("content", "client_message_id")
    raw_id_fields = ("conversation", "reply_to")


@admin.register(AssistantSettings)
class AssistantSettingsAdmin(admin.ModelAdmin):
    list_display = ("name", "tone", "language", "grounded_only", "updated_at")
