from django.urls import path, re_path

from pki import views

app_name = "pki"

urlpatterns = [
    path("ca/<slug:slug>.crt", views.ca_certificate, name="ca-certificate"),
    path("crl/<slug:slug>.crl", views.crl, name="crl"),
    path("ocsp", views.ocsp_responder, name="ocsp"),
    re_path(r"^ocsp/(?P<tail>.+)$", views.ocsp_responder, name="ocsp-get"),
    re_path(
        r"^status/(?P<ident>[0-9A-Fa-f:]{1,95})/$",  # serial or SHA-256, colons allowed
        views.certificate_status,
        name="certificate-status",
    ),
    path("health/", views.health, name="health"),
]
