from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from pki.selectors import ca_list_active
from portal.models import Firm


def home(request: HttpRequest) -> HttpResponse:
    context = {"cas": ca_list_active()}
    if request.user.is_authenticated and request.user.is_staff:
        context["firms"] = Firm.objects.prefetch_related("participants")
    return render(request, "portal/home.html", context)
