"""Input validation (type, range, shape) for the RFQ API, and the documented output shapes.

Business rules live in ``rfq.services``; responses are rendered by ``rfq.render`` (the same
code renders the event feed). The ``*Out`` serializers below describe those responses for the
OpenAPI schema; Schemathesis checks every response against them (tests/rfq/test_schema.py).
"""

import re
from decimal import Decimal
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from rfq.models import PRICE, Quote, Rfq, Side

CLIENT_ID = RegexValidator(r"^[A-Za-z0-9_.:-]{1,32}$", "1-32 of A-Z a-z 0-9 _ . : -")
TINY = Decimal("0.00000001")


# The one grammar of a decimal on the API: ASCII digits, an optional leading "-", an optional
# fraction. No "+", exponent, separator, surrounding space, NaN or Infinity: "1e2" must not
# quietly become 100 on a trading API.
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
_DECIMAL = re.compile(DECIMAL_PATTERN)


@extend_schema_field(
    {"type": "string", "format": "decimal", "pattern": DECIMAL_PATTERN, "example": "1.5"}
)
class DecimalString(serializers.DecimalField):
    """Decimals travel as JSON strings ("1.5"): a JSON number is a binary float to most
    clients, and a price must not be rounded on the way in. Every decimal of the API's input
    goes through this field, so the grammar is checked in one place."""

    default_error_messages = {
        "not_string": 'Send decimals as strings, e.g. "1.5".',
        "grammar": 'Not a decimal: ASCII digits with an optional "-" and fraction, e.g. "-12.5" '
        '(no "+", exponent, separator or spaces).',
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            max_digits=PRICE["max_digits"], decimal_places=PRICE["decimal_places"], **kwargs
        )

    def to_internal_value(self, data: Any) -> Decimal:
        """Refuse anything but the strict grammar before DRF's (lenient) decimal parsing."""
        if not isinstance(data, str):
            self.fail("not_string")
        if _DECIMAL.fullmatch(data) is None:
            self.fail("grammar")
        return super().to_internal_value(data)

    def to_representation(self, value: Any) -> str:
        """As a string, as on the wire (the schema shows defaults through this)."""
        return str(value)


class JsonBoolean(serializers.BooleanField):
    """A JSON ``true`` or ``false`` only: DRF's field also takes "yes", "1", 1 and the like,
    and a flag such as ``anonymous`` must not be set by a guess."""

    default_error_messages = {"not_boolean": "Send true or false (a JSON boolean)."}

    def to_internal_value(self, data: Any) -> bool:
        """The value itself, when it is a JSON boolean."""
        if not isinstance(data, bool):
            self.fail("not_boolean")
        return data


class LegIn(serializers.Serializer):
    instrument = serializers.CharField(max_length=64)
    side = serializers.ChoiceField(choices=Side.choices)
    ratio = DecimalString(min_value=TINY, required=False, default=Decimal(1))


class RfqCreateIn(serializers.Serializer):
    # TYPEHINT NOTE: the stubs' BaseSerializer lacks min_length/max_length, which DRF (3.15+)
    # hands to the ListSerializer that many=True builds.
    legs = LegIn(many=True, min_length=1, max_length=20)  # type: ignore[call-arg]
    quantity = DecimalString(min_value=TINY)
    counterparties = serializers.ListField(
        child=serializers.CharField(max_length=20),
        max_length=100,
        required=False,
        default=list,
        help_text="LEIs of liquidity-provider firms; empty sends the RFQ to every eligible one.",
    )
    anonymous = JsonBoolean(required=False, default=False)
    expires_in = serializers.IntegerField(required=False, help_text="Seconds; default 300, 5-600.")
    client_rfq_id = serializers.CharField(
        required=False, default="", validators=[CLIENT_ID], max_length=32
    )


class RfqListIn(serializers.Serializer):
    state = serializers.ChoiceField(choices=Rfq.State.choices, required=False)
    role = serializers.ChoiceField(choices=["requester", "maker"], required=False)
    cursor = serializers.CharField(required=False, max_length=64)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)


class PageIn(serializers.Serializer):
    cursor = serializers.CharField(required=False, max_length=64)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)


class QuoteLegIn(serializers.Serializer):
    leg_no = serializers.IntegerField(min_value=1, max_value=20)
    bid_price = DecimalString(required=False, allow_null=True, default=None)
    ask_price = DecimalString(required=False, allow_null=True, default=None)


class QuoteIn(serializers.Serializer):
    bid_price = DecimalString(required=False, allow_null=True, default=None)
    bid_size = DecimalString(required=False, allow_null=True, default=None, min_value=TINY)
    ask_price = DecimalString(required=False, allow_null=True, default=None)
    ask_size = DecimalString(required=False, allow_null=True, default=None, min_value=TINY)
    # A ListField, not QuoteLegIn(many=True): many=True hands allow_null to the child as well,
    # so "legs": [null] would validate and reach the service as a None leg (a 500).
    legs = serializers.ListField(
        child=QuoteLegIn(), required=False, allow_null=True, default=None, max_length=20
    )
    expires_in = serializers.IntegerField(required=False, help_text="Seconds; default 60, 10-120.")
    client_quote_id = serializers.CharField(
        required=False, default="", validators=[CLIENT_ID], max_length=32
    )


class AcceptIn(serializers.Serializer):
    quote_id = serializers.UUIDField()
    side = serializers.ChoiceField(
        choices=Side.choices, help_text="buy lifts the quote's ask; sell hits its bid."
    )
    quantity = DecimalString(required=False, min_value=TINY)
    limit_price = DecimalString(
        required=False, help_text="The worst price you accept: a maximum to buy, a minimum to sell."
    )


class CancelAllIn(serializers.Serializer):
    rfq_id = serializers.UUIDField(required=False)


class EventsIn(serializers.Serializer):
    since = serializers.IntegerField(required=False, default=0, min_value=0)
    wait = serializers.FloatField(required=False, default=0, min_value=0, max_value=25)
    limit = serializers.IntegerField(required=False, default=100, min_value=1, max_value=500)


# --- output shapes (documentation of rfq.render) ------------------------------------------------


class FirmOut(serializers.Serializer):
    lei = serializers.CharField()
    legal_name = serializers.CharField()


class InstrumentOut(serializers.Serializer):
    symbol = serializers.CharField()
    kind = serializers.CharField()
    underlying = serializers.CharField()
    quote_currency = serializers.CharField()
    expiry = serializers.DateTimeField(allow_null=True)
    strike = serializers.CharField(allow_null=True)
    option_type = serializers.CharField(allow_null=True)
    tick_size = serializers.CharField()
    min_size = serializers.CharField()


class InstrumentListOut(serializers.Serializer):
    results = InstrumentOut(many=True)


class RfqLegOut(serializers.Serializer):
    leg_no = serializers.IntegerField()
    instrument = serializers.CharField()
    side = serializers.ChoiceField(choices=Side.choices)
    ratio = serializers.CharField()
    quantity = serializers.CharField()


class RfqOut(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.ChoiceField(choices=Rfq.State.choices)
    state_reason = serializers.CharField(allow_blank=True)
    quantity = serializers.CharField()
    legs = RfqLegOut(many=True)
    anonymous = serializers.BooleanField()
    requester = FirmOut(allow_null=True, help_text="Hidden from makers when anonymous.")
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    closed_at = serializers.DateTimeField(allow_null=True)
    client_rfq_id = serializers.CharField(
        allow_null=True, required=False, help_text="Only to the requester's firm."
    )
    trader_id = serializers.CharField(required=False, help_text="Only to the requester's firm.")
    counterparties = FirmOut(many=True, required=False, help_text="Only to the requester's firm.")


class RfqPageOut(serializers.Serializer):
    results = RfqOut(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class QuoteLegOut(serializers.Serializer):
    leg_no = serializers.IntegerField()
    bid_price = serializers.CharField(allow_null=True)
    ask_price = serializers.CharField(allow_null=True)


class QuoteOut(serializers.Serializer):
    id = serializers.UUIDField()
    rfq_id = serializers.UUIDField()
    state = serializers.ChoiceField(choices=Quote.State.choices)
    state_reason = serializers.CharField(allow_blank=True)
    maker = FirmOut()
    bid_price = serializers.CharField(allow_null=True)
    bid_size = serializers.CharField(allow_null=True)
    ask_price = serializers.CharField(allow_null=True)
    ask_size = serializers.CharField(allow_null=True)
    legs = QuoteLegOut(many=True)
    replaces = serializers.UUIDField(allow_null=True)
    replaced_by = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    closed_at = serializers.DateTimeField(allow_null=True)
    client_quote_id = serializers.CharField(
        allow_null=True, required=False, help_text="Only to the quoting firm."
    )
    trader_id = serializers.CharField(required=False, help_text="Only to the quoting firm.")


class QuotePageOut(serializers.Serializer):
    results = QuoteOut(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class CancelAllOut(serializers.Serializer):
    cancelled = serializers.ListField(child=serializers.UUIDField())


class TradeLegOut(serializers.Serializer):
    leg_no = serializers.IntegerField()
    instrument = serializers.CharField()
    side = serializers.ChoiceField(choices=Side.choices)
    quantity = serializers.CharField()
    price = serializers.CharField()


class TradeOut(serializers.Serializer):
    id = serializers.UUIDField()
    rfq_id = serializers.UUIDField()
    quote_id = serializers.UUIDField()
    role = serializers.ChoiceField(choices=["requester", "maker"])
    side = serializers.ChoiceField(choices=Side.choices, help_text="The viewer's side.")
    quantity = serializers.CharField()
    price = serializers.CharField()
    legs = TradeLegOut(many=True)
    requester = FirmOut()
    maker = FirmOut()
    created_at = serializers.DateTimeField()
    client_rfq_id = serializers.CharField(allow_null=True, required=False)
    client_quote_id = serializers.CharField(allow_null=True, required=False)
    trader_id = serializers.CharField()


class TradePageOut(serializers.Serializer):
    results = TradeOut(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class EventOut(serializers.Serializer):
    seq = serializers.IntegerField()
    type = serializers.CharField(
        help_text="rfq.created|cancelled|expired|filled, quote.created|replaced|cancelled|"
        "expired|accepted|traded_away, trade.created"
    )
    created_at = serializers.DateTimeField()
    # TYPEHINT NOTE: the stubs see Serializer.data (a property) overridden; DRF's serializer
    # metaclass takes declared fields out of the class body, so the property stays.
    data = serializers.DictField(  # type: ignore[assignment]
        help_text="{rfq: …}, {quote: …} or {trade: …}, as you see it."
    )


class EventsOut(serializers.Serializer):
    events = EventOut(many=True)
    next_since = serializers.IntegerField(help_text="Pass as since= on the next call.")


class WhoAmIFirmOut(FirmOut):
    role = serializers.CharField()


class WhoAmIParticipantOut(serializers.Serializer):
    trader_id = serializers.CharField()
    name = serializers.CharField()
    role = serializers.CharField()
    san_uri = serializers.CharField()


class WhoAmICertificateOut(serializers.Serializer):
    serial = serializers.CharField()
    fingerprint_sha256 = serializers.CharField()
    not_after = serializers.DateTimeField()
    days_to_expiry = serializers.IntegerField()


class WhoAmIOut(serializers.Serializer):
    firm = WhoAmIFirmOut()
    participant = WhoAmIParticipantOut()
    certificate = WhoAmICertificateOut()
    checked_at = serializers.DateTimeField()


class ErrorOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    request_id = serializers.CharField()
    details = serializers.DictField()
