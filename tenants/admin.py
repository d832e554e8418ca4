from django.contrib import admin

from tenants.models import Domain, PooledSchema, SchemaTemplate, Workspace


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "plan", "status", "created_at")
    list_filter = ("plan", "status")
    search_fields = ("slug", "name")
    readonly_fields = ("schema_name", "created_at")
    inlines = [DomainInline]

    def has_delete_permission(self, request, obj=None) -> bool:  # purge goes through delete_workspace
        return False


@admin.register(PooledSchema)
class PooledSchemaAdmin(admin.ModelAdmin):
    list_display = ("schema_name", "fingerprint", "created_at")


@admin.register(SchemaTemplate)
class SchemaTemplateAdmin(admin.ModelAdmin):
    list_display = ("fingerprint", "created_at")
    readonly_fields = ("fingerprint", "sql", "migrations", "created_at")
