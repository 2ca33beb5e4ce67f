from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django_otp.admin import OTPAdminSite

from kernel.models import AuditRecord, Firm, Participant

# The admin is officer territory too: it needs the verified second factor, like /officer/.
admin.site.__class__ = OTPAdminSite


@admin.register(Firm)
class FirmAdmin(admin.ModelAdmin):
    list_display = ("legal_name", "lei", "role", "status")
    list_filter = ("status", "role")
    search_fields = ("legal_name", "lei")


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ("trader_id", "name", "firm", "role", "is_active")
    search_fields = ("trader_id", "name", "firm__legal_name")


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    list_display = ("sequence", "created_at", "event", "actor_label", "target_type", "target_id")
    list_filter = ("event",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
