from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from portal import views

portal_patterns = [
    path("", views.home, name="home"),
]

urlpatterns = [
    path("", include((portal_patterns, "portal"))),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("pki/", include("pki.urls")),
    path("api/v1/", include("rfq.urls")),
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
