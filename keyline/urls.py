"""The site: every app's URLs under one root. The only module (with the rest of keyline/)
that may import every app."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from portal.urls import portal_patterns
from rfq.views import NotFoundApi

urlpatterns = [
    path("", include((portal_patterns, "portal"))),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Passkey ceremonies (django-otp-webauthn's namespace, the portal's rules: portal.passkeys).
    path("accounts/passkeys/", include("portal.passkeys")),
    path("pki/", include("pki.urls")),
    # EST (RFC 7030) enrollment and re-enrollment, on the API's address behind the terminator.
    path(".well-known/est/", include("pki.est_views")),
    path("api/v1/", include("rfq.urls")),
    # Any other path under /api/ (a typo, another version) answers in the API's JSON shape.
    re_path(r"^api/", NotFoundApi.as_view(), name="api-not-found"),
    path("admin/", admin.site.urls),
    # The RFQ API's contract, readable in a browser without a client certificate.
    path(
        "developers/api/schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="developers-schema",
    ),
    path(
        "developers/api/",
        SpectacularSwaggerView.as_view(
            url_name="developers-schema", authentication_classes=[], permission_classes=[]
        ),
        name="developers-api",
    ),
]
