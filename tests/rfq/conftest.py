"""RFQ test world: instruments and desks (a firm, a participant and its certificate) that
call the API in-process with the headers the terminator sets."""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from urllib.parse import quote

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from kernel.models import Firm, Participant
from rfq.models import Instrument
from rfq.reference import INSTRUMENTS, reference_forget
from tests.factories import FirmFactory, ParticipantFactory
from tests.keys import ec_key, make_csr

API = "/api/v1/"


@dataclass
class Desk:
    firm: Firm
    participant: Participant
    certificate: object
    client: Client

    @property
    def headers(self) -> dict:
        return {
            "HTTP_X_KEYLINE_TERMINATOR": settings.KEYLINE_TERMINATOR_SECRET,
            "HTTP_X_KEYLINE_CLIENT_VERIFY": "SUCCESS",
            "HTTP_X_KEYLINE_CLIENT_CERT": quote(self.certificate.pem),
        }

    def get(self, path: str, **params):
        return self.client.get(API + path, params, **self.headers)

    def post(self, path: str, body: dict | None = None):
        return self.client.post(
            API + path, body or {}, content_type="application/json", **self.headers
        )


@pytest.fixture
def desk(db, cas, issue):
    """``desk(role, firm=None)``: a participant with a live certificate. ``role`` is
    "requester" or "maker"; a new firm gets the matching firm role."""

    def _desk(role: str, firm: Firm | None = None) -> Desk:
        if firm is None:
            firm = FirmFactory(
                role=Firm.Role.CLIENT if role == "requester" else Firm.Role.LIQUIDITY_PROVIDER
            )
        participant = ParticipantFactory(
            firm=firm,
            role=Participant.Role.REQUESTER
            if role == "requester"
            else Participant.Role.LIQUIDITY_PROVIDER,
        )
        certificate = issue(participant, make_csr(ec_key()))
        return Desk(firm, participant, certificate, Client())

    return _desk


@pytest.fixture
def instruments(db):
    expiry = timezone.now() + timedelta(days=90)
    rows = [
        Instrument(symbol="BTC-PERPETUAL", kind="perpetual", underlying="BTC",
                   tick_size=Decimal("0.5"), min_size=Decimal("0.1")),
        Instrument(symbol="BTC-FUT", kind="future", underlying="BTC", expiry=expiry,
                   tick_size=Decimal("0.5"), min_size=Decimal("0.1")),
        Instrument(symbol="BTC-100000-C", kind="option", underlying="BTC", expiry=expiry,
                   strike=Decimal(100000), option_type="call", quote_currency="BTC",
                   tick_size=Decimal("0.0005"), min_size=Decimal("0.1")),
        Instrument(symbol="BTC-90000-P", kind="option", underlying="BTC", expiry=expiry,
                   strike=Decimal(90000), option_type="put", quote_currency="BTC",
                   tick_size=Decimal("0.0005"), min_size=Decimal("0.1")),
        Instrument(symbol="ETH-PERPETUAL", kind="perpetual", underlying="ETH",
                   tick_size=Decimal("0.05"), min_size=Decimal(1)),
    ]  # fmt: skip
    Instrument.objects.bulk_create(rows)
    # bulk_create sends no post_save: forget what a process (a live server) keeps in memory.
    reference_forget(INSTRUMENTS)
    return {i.symbol: i for i in rows}


@pytest.fixture
def world(desk, instruments):
    """Requester A and B (two client firms), an invited LP and an uninvited LP."""
    a = desk("requester")
    b = desk("requester")
    lp = desk("maker")
    other_lp = desk("maker")
    return {"a": a, "b": b, "lp": lp, "other_lp": other_lp}


def one_leg(quantity: str = "1", **extra) -> dict:
    return {"legs": [{"instrument": "BTC-PERPETUAL", "side": "buy"}], "quantity": quantity, **extra}
