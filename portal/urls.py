"""The portal's pages (mounted at the site's root by keyline.urls)."""

from django.urls import path

from portal import views

portal_patterns = [
    path("", views.home, name="home"),
    path("apply/", views.apply, name="apply"),
    path("apply/case/<str:token>/", views.case, name="case"),
    path("invite/<str:token>/", views.invite, name="invite"),
    path("help/csr/", views.csr_help, name="csr-help"),
    path("accounts/verify/", views.verify, name="verify"),
    path("accounts/security/", views.security, name="security"),
    path(
        "accounts/security/passkeys/<int:pk>/remove/",
        views.passkey_remove,
        name="passkey-remove",
    ),
    path("officer/", views.officer_dashboard, name="officer"),
    path("officer/cases/<int:pk>/", views.officer_case, name="officer-case"),
    path("officer/cases/<int:pk>/checks/", views.officer_check, name="officer-check"),
    path("officer/cases/<int:pk>/documents/", views.officer_document, name="officer-document"),
    path(
        "officer/cases/<int:pk>/documents/<int:doc>/",
        views.officer_document_download,
        name="officer-document-download",
    ),
    path("officer/cases/<int:pk>/callback/", views.officer_callback, name="officer-callback"),
    path("officer/cases/<int:pk>/prepare/", views.officer_prepare, name="officer-prepare"),
    path("officer/cases/<int:pk>/decide/", views.officer_decide, name="officer-decide"),
    path("officer/firms/<int:firm_id>/", views.officer_firm, name="officer-firm"),
    path(
        "officer/firms/<int:firm_id>/est-policy/",
        views.officer_est_policy,
        name="officer-est-policy",
    ),
    path(
        "officer/firms/<int:firm_id>/<str:action>/",
        views.officer_firm_suspend,
        name="officer-firm-action",
    ),
    path(
        "officer/users/<int:user_id>/second-factor-reset/",
        views.officer_user_factor_reset,
        name="officer-user-factor-reset",
    ),
    path("officer/audit/", views.officer_audit, name="officer-audit"),
    path("officer/audit/export.csv", views.officer_audit_export, name="officer-audit-export"),
    path("officer/audit/verify/", views.officer_audit_verify, name="officer-audit-verify"),
    path("officer/csrs/<int:pk>/", views.officer_csr, name="officer-csr"),
    path("officer/csrs/<int:pk>/decide/", views.officer_csr_decide, name="officer-csr-decide"),
    path("firm/", views.firm_dashboard, name="firm"),
    path("firm/participants/new/", views.participant_new, name="participant-new"),
    path("firm/participants/<int:pk>/", views.participant_detail, name="participant"),
    path(
        "participants/<int:pk>/enrollment-tokens/",
        views.enrollment_token_new,
        name="enrollment-token-new",
    ),
    path(
        "enrollment-tokens/<int:pk>/revoke/",
        views.enrollment_token_revoke,
        name="enrollment-token-revoke",
    ),
    path("certificates/<int:pk>/", views.certificate_detail, name="certificate"),
    path(
        "certificates/<int:pk>/download/<str:kind>/",
        views.certificate_download,
        name="certificate-download",
    ),
    path("certificates/<int:pk>/connect/", views.certificate_connect, name="certificate-connect"),
    path("certificates/<int:pk>/revoke/", views.certificate_revoke, name="certificate-revoke"),
]
