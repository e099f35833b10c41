from __future__ import annotations

from django.contrib import admin

from kernel.admin import ReadOnlyAdmin
from pki.models import Certificate, CertificateRevocationList


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyAdmin):
    list_display = ["common_name", "serial", "purpose", "key_type", "status", "not_after", "revoked_at"]
    list_filter = ["status", "purpose", "key_type"]
    search_fields = ["serial", "common_name", "fingerprint_sha256"]


@admin.register(CertificateRevocationList)
class CertificateRevocationListAdmin(ReadOnlyAdmin):
    list_display = ["number", "this_update", "next_update", "revoked_count"]
