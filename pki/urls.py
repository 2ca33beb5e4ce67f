from django.urls import path

from pki import views

app_name = "pki"

urlpatterns = [
    path("ca/<slug:slug>.crt", views.ca_certificate, name="ca-certificate"),
]
