from django.contrib import admin

from participants.models import ImportJob, Participant, Person


@admin.register(Person)
class PersonAdmin(admin.ModelAdmin):
    list_display = ["person_id", "first_name", "last_name", "email", "phone", "brand"]
    list_filter = ["brand"]
    search_fields = ["person_id", "first_name", "last_name", "email", "phone"]


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ["person", "project", "role", "created_at"]
    list_filter = ["project__brand"]
    search_fields = ["person__first_name", "person__last_name", "person__email"]
    raw_id_fields = ["person", "project"]


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "original_name", "brand", "project", "status", "total_rows", "created_at"]
    list_filter = ["status", "brand"]
    search_fields = ["original_name"]
    raw_id_fields = ["project", "created_by"]
    readonly_fields = ["report", "columns", "failure"]
