from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from pki.models import Certificate, CertificateAuthority, CertificateRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """PKI rows change only through pki.services; the admin shows them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CertificateAuthority)
class CertificateAuthorityAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "key_type", "not_after", "is_active")


@admin.register(CertificateRequest)
class CertificateRequestAdmin(ReadOnlyAdmin):
    list_display = ("id", "participant", "key_description", "status", "created_at")
    list_filter = ("status",)


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyAdmin):
    list_display = ("serial", "kind", "subject", "not_after", "status")
    list_filter = ("kind", "status")
    search_fields = ("serial", "fingerprint_sha256", "subject")
