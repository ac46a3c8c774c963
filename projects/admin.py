from django.contrib import admin

from projects.models import Project, ProjectStageChange


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "brand", "kind", "stage", "available_until", "created_at"]
    list_filter = ["kind", "stage", "brand"]
    search_fields = ["name"]
    readonly_fields = ["stage"]  # stage changes go through project_change_stage


@admin.register(ProjectStageChange)
class ProjectStageChangeAdmin(admin.ModelAdmin):
    list_display = ["project", "from_stage", "to_stage", "actor", "created_at"]
    list_filter = ["to_stage"]
