"""The site's URLs plus /api/v1/bench/{auth,noauth}/ (bench_settings.py only)."""

from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from keyline.urls import urlpatterns as site


class Trivial(APIView):
    def get(self, request):
        return Response({"ok": True})


class TrivialWithoutAuthentication(Trivial):
    authentication_classes = []
    permission_classes = [AllowAny]


urlpatterns = [
    path("api/v1/bench/auth/", Trivial.as_view()),
    path("api/v1/bench/noauth/", TrivialWithoutAuthentication.as_view()),
    *site,
]
