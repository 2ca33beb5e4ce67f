from django.urls import path

from rfq import views

app_name = "api"

urlpatterns = [
    path("whoami/", views.WhoAmIView.as_view(), name="whoami"),
]
