from django.contrib import admin

from tenants.models import Domain, LedgerEntry, Plan, PooledSchema, SchemaTemplate, Subscription, UsageAlert, Workspace


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "plan", "status", "created_at")
    list_filter = ("plan", "status")
    search_fields = ("slug", "name")
    # The plan changes through tenants.billing.plan_change (proration, scheduled downgrades, audit), i.e. the
    # workspace's billing page or its API; editing the column here would skip all of that.
    readonly_fields = ("schema_name", "plan", "created_at")
    inlines = [DomainInline]

    def has_delete_permission(self, request, obj=None) -> bool:  # purge goes through delete_workspace
        return False

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        if change and "status" in form.changed_data:  # suspended here: its open sockets close too
            from tenants.services import workspace_status_announce

            workspace_status_announce(workspace=obj)


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    """Plans are data: platform staff edit limits and prices here. A plan's code can't change (workspaces refer to
    it), and a plan can't be deleted (hide it with "is public" instead)."""

    list_display = ("code", "name", "tier", "is_public", "price", "overage_price", "allow_overage", "monthly_credits",
                    "max_documents", "max_storage_bytes", "max_widgets", "max_seats")
    list_editable = ("is_public",)
    ordering = ("tier", "code")
    fieldsets = (
        (None, {"fields": ("code", "name", "tier", "is_public")}),
        ("Price", {"fields": ("currency", "price", "overage_price", "allow_overage")}),
        ("Limits (empty = unlimited)", {"fields": ("monthly_credits", "max_documents", "max_storage_bytes",
                                                   "max_widgets", "max_seats")}),
        ("Rate limits and providers", {"fields": ("api_requests_per_minute", "chat_messages_per_minute",
                                                  "allowed_providers")}),
    )

    def get_readonly_fields(self, request, obj=None):
        return ("code",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = ("workspace", "period_start", "period_end", "scheduled_plan", "overage_enabled")
    search_fields = ("workspace__slug",)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    """Append-only: credits are adjusted with `manage.py grant_credits` (which records a reason and an audit row)."""

    list_display = ("created_at", "workspace", "kind", "amount", "charge", "plan", "reason", "reference")
    list_filter = ("kind", "plan")
    search_fields = ("workspace__slug", "reference")


@admin.register(UsageAlert)
class UsageAlertAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "workspace", "meter", "threshold", "used", "limit", "period_start")
    list_filter = ("meter", "threshold")


@admin.register(PooledSchema)
class PooledSchemaAdmin(admin.ModelAdmin):
    list_display = ("schema_name", "fingerprint", "created_at")


@admin.register(SchemaTemplate)
class SchemaTemplateAdmin(admin.ModelAdmin):
    list_display = ("fingerprint", "created_at")
    readonly_fields = ("fingerprint", "sql", "migrations", "created_at")
