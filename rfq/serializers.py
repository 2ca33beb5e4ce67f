"""Input validation (type, range, shape) for the RFQ API; they also describe the requests in
the OpenAPI schema.

Business rules live in ``rfq.services``; responses are rendered by ``rfq.render`` into the
shapes of ``rfq.shapes``. Limits (legs, page sizes, waits) are read from
``settings.KEYLINE_RFQ``, the one place the services read them from too.
"""

import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from kernel.shapes import DECIMAL_PATTERN
from rfq.models import PRICE, Rfq, Side

CLIENT_ID = RegexValidator(r"^[A-Za-z0-9_.:-]{1,32}$", "1-32 of A-Z a-z 0-9 _ . : -")
TINY = Decimal("0.00000001")
LIMITS = settings.KEYLINE_RFQ


# The one grammar of a decimal on the API (kernel.shapes.DECIMAL_PATTERN): ASCII digits, an
# optional leading "-", an optional fraction. No "+", exponent, separator, surrounding space,
# NaN or Infinity: "1e2" must not quietly become 100 on a trading API.
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
    legs = LegIn(many=True, min_length=1, max_length=LIMITS["MAX_LEGS"])  # type: ignore[call-arg]
    quantity = DecimalString(min_value=TINY)
    counterparties = serializers.ListField(
        child=serializers.CharField(max_length=20),
        max_length=LIMITS["MAX_COUNTERPARTIES"],
        required=False,
        default=list,
        help_text="LEIs of liquidity-provider firms; empty sends the RFQ to every eligible one.",
    )
    anonymous = JsonBoolean(required=False, default=False)
    expires_in = serializers.IntegerField(
        required=False,
        help_text=f"Seconds; default {LIMITS['RFQ_EXPIRY_DEFAULT']}, "
        f"{LIMITS['RFQ_EXPIRY_MIN']}-{LIMITS['RFQ_EXPIRY_MAX']}.",
    )
    client_rfq_id = serializers.CharField(
        required=False, default="", validators=[CLIENT_ID], max_length=32
    )


class RfqListIn(serializers.Serializer):
    state = serializers.ChoiceField(choices=Rfq.State.choices, required=False)
    role = serializers.ChoiceField(choices=["requester", "maker"], required=False)
    cursor = serializers.CharField(required=False, max_length=64)
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=LIMITS["PAGE_SIZE_MAX"],
        default=LIMITS["PAGE_SIZE_DEFAULT"],
    )


class PageIn(serializers.Serializer):
    cursor = serializers.CharField(required=False, max_length=64)
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=LIMITS["PAGE_SIZE_MAX"],
        default=LIMITS["PAGE_SIZE_DEFAULT"],
    )


class QuoteLegIn(serializers.Serializer):
    leg_no = serializers.IntegerField(min_value=1, max_value=LIMITS["MAX_LEGS"])
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
        child=QuoteLegIn(),
        required=False,
        allow_null=True,
        default=None,
        max_length=LIMITS["MAX_LEGS"],
    )
    expires_in = serializers.IntegerField(
        required=False,
        help_text=f"Seconds; default {LIMITS['QUOTE_EXPIRY_DEFAULT']}, "
        f"{LIMITS['QUOTE_EXPIRY_MIN']}-{LIMITS['QUOTE_EXPIRY_MAX']}, never past the RFQ.",
    )
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
    wait = serializers.FloatField(
        required=False, default=0, min_value=0, max_value=LIMITS["EVENTS_MAX_WAIT"]
    )
    limit = serializers.IntegerField(
        required=False,
        default=LIMITS["EVENTS_LIMIT_DEFAULT"],
        min_value=1,
        max_value=LIMITS["EVENTS_LIMIT_MAX"],
    )
