"""The REST API (DRF). Every view authenticates by client certificate
(``pki.authentication``) and answers errors in one shape (``portal.api``)."""

from django.utils import timezone
from rest_framework.views import APIView

from portal.api import ok


class WhoAmIView(APIView):
    """``GET /api/v1/whoami/``: who the platform thinks the caller is. The first call every
    integrator makes."""

    def get(self, request):
        principal = request.user
        participant = principal.participant
        firm = participant.firm
        now = timezone.now()
        return ok(
            request,
            {
                "firm": {
                    "legal_name": firm.legal_name,
                    "lei": firm.lei,
                    "role": firm.role,
                },
                "participant": {
                    "trader_id": participant.trader_id,
                    "name": participant.name,
                    "role": participant.role,
                    "san_uri": participant.san_uri,
                },
                "certificate": {
                    "serial": principal.serial,
                    "fingerprint_sha256": principal.decision.fingerprint_sha256,
                    "not_after": principal.not_after,
                    "days_to_expiry": (principal.not_after - now).days,
                },
                "checked_at": now,
            },
        )
