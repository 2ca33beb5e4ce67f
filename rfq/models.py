"""RFQ domain: instruments, RFQs with their legs, quotes, trades and the event feed.

State lives in ``TextChoices`` fields; every transition is a service in ``rfq/services.py``,
taken under the RFQ's row lock (a quote is only ever written while its RFQ is locked), so
the database constraints below are a second line, not the mechanism.
"""

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from rfq.ids import uuid7

PRICE = {"max_digits": 24, "decimal_places": 8}


class Side(models.TextChoices):
    BUY = "buy", _("Buy")
    SELL = "sell", _("Sell")


def opposite(side: str) -> str:
    return Side.SELL if side == Side.BUY else Side.BUY


class Instrument(models.Model):
    """Reference data. Symbols follow Deribit's shape: ``BTC-PERPETUAL``, ``BTC-26MAR27``,
    ``BTC-26MAR27-100000-C``."""

    class Kind(models.TextChoices):
        PERPETUAL = "perpetual", _("Perpetual")
        FUTURE = "future", _("Future")
        OPTION = "option", _("Option")

    class OptionType(models.TextChoices):
        CALL = "call", _("Call")
        PUT = "put", _("Put")

    symbol = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    underlying = models.CharField(max_length=16)
    quote_currency = models.CharField(max_length=16, default="USD")
    expiry = models.DateTimeField(null=True, blank=True)
    strike = models.DecimalField(null=True, blank=True, **PRICE)
    option_type = models.CharField(max_length=4, choices=OptionType.choices, blank=True)
    tick_size = models.DecimalField(**PRICE)
    min_size = models.DecimalField(
        **PRICE, help_text="Smallest tradable quantity per leg, and the size increment."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(
                name="rfq_instrument_shape",
                condition=(
                    Q(kind="perpetual", expiry__isnull=True, strike__isnull=True, option_type="")
                    | Q(kind="future", expiry__isnull=False, strike__isnull=True, option_type="")
                    | Q(
                        kind="option",
                        expiry__isnull=False,
                        strike__gt=0,
                        option_type__in=["call", "put"],
                    )
                ),
                violation_error_message=(
                    "A perpetual has no expiry, strike or type; a future has an expiry only; an "
                    "option has an expiry, a positive strike and call/put."
                ),
            ),
            models.CheckConstraint(
                name="rfq_instrument_increments_positive",
                condition=Q(tick_size__gt=0, min_size__gt=0),
            ),
        ]

    def __str__(self) -> str:
        return self.symbol


class Rfq(models.Model):
    class State(models.TextChoices):
        OPEN = "open", _("Open")
        FILLED = "filled", _("Filled")
        CANCELLED = "cancelled", _("Cancelled")
        EXPIRED = "expired", _("Expired")

    # Time-ordered UUIDs: unguessable, no venue-wide counter to leak, and ordering by id is
    # ordering by creation (the list cursor relies on it).
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    firm = models.ForeignKey("kernel.Firm", on_delete=models.PROTECT, related_name="rfqs")
    requester = models.ForeignKey(
        "kernel.Participant", on_delete=models.PROTECT, related_name="rfqs"
    )
    certificate_serial = models.CharField(max_length=64)
    client_rfq_id = models.CharField(max_length=32, blank=True)
    request_hash = models.CharField(max_length=64)
    quantity = models.DecimalField(**PRICE)
    anonymous = models.BooleanField(default=False)
    # True when no counterparties were named: every eligible liquidity provider may quote.
    to_all = models.BooleanField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    state_reason = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "RFQ"
        constraints = [
            models.UniqueConstraint(
                fields=["firm", "client_rfq_id"],
                condition=~Q(client_rfq_id=""),
                name="rfq_client_rfq_id_unique_per_firm",
            ),
            models.CheckConstraint(name="rfq_quantity_positive", condition=Q(quantity__gt=0)),
        ]
        indexes = [
            models.Index(fields=["firm", "-id"], name="rfq_firm_id_idx"),
            models.Index(fields=["firm", "state", "-id"], name="rfq_firm_state_id_idx"),
            models.Index(
                fields=["expires_at"], condition=Q(state="open"), name="rfq_open_expiry_idx"
            ),
            models.Index(fields=["-id"], condition=Q(to_all=True), name="rfq_to_all_id_idx"),
        ]

    def __str__(self) -> str:
        return f"RFQ {self.id}"


class RfqCounterparty(models.Model):
    """A liquidity-provider firm an RFQ was addressed to."""

    rfq = models.ForeignKey(Rfq, on_delete=models.CASCADE, related_name="counterparty_links")
    firm = models.ForeignKey("kernel.Firm", on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["firm", "rfq"], name="rfq_counterparty_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.rfq_id} -> firm {self.firm_id}"


class RfqLeg(models.Model):
    """One leg: its quantity is ``ratio x rfq.quantity``; ``side`` orients the structure
    (buying the package buys the ``buy`` legs and sells the ``sell`` legs)."""

    rfq = models.ForeignKey(Rfq, on_delete=models.CASCADE, related_name="legs")
    leg_no = models.PositiveSmallIntegerField()
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="+")
    side = models.CharField(max_length=4, choices=Side.choices)
    ratio = models.DecimalField(**PRICE)

    class Meta:
        ordering = ["rfq", "leg_no"]
        constraints = [
            models.UniqueConstraint(fields=["rfq", "leg_no"], name="rfq_leg_unique"),
            models.CheckConstraint(name="rfq_leg_ratio_positive", condition=Q(ratio__gt=0)),
        ]

    def __str__(self) -> str:
        return f"{self.rfq_id} leg {self.leg_no}"


class Quote(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", _("Active")
        ACCEPTED = "accepted", _("Accepted")
        REPLACED = "replaced", _("Replaced")
        CANCELLED = "cancelled", _("Cancelled")
        EXPIRED = "expired", _("Expired")
        TRADED_AWAY = "traded_away", _("Traded away")

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    rfq = models.ForeignKey(Rfq, on_delete=models.PROTECT, related_name="quotes")
    firm = models.ForeignKey("kernel.Firm", on_delete=models.PROTECT, related_name="quotes")
    maker = models.ForeignKey("kernel.Participant", on_delete=models.PROTECT, related_name="quotes")
    certificate_serial = models.CharField(max_length=64)
    client_quote_id = models.CharField(max_length=32, blank=True)
    request_hash = models.CharField(max_length=64)
    bid_price = models.DecimalField(null=True, blank=True, **PRICE)
    bid_size = models.DecimalField(null=True, blank=True, **PRICE)
    ask_price = models.DecimalField(null=True, blank=True, **PRICE)
    ask_size = models.DecimalField(null=True, blank=True, **PRICE)
    replaces = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="replaced_by"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    state_reason = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["firm", "client_quote_id"],
                condition=~Q(client_quote_id=""),
                name="quote_client_quote_id_unique_per_firm",
            ),
            models.UniqueConstraint(
                fields=["rfq"], condition=Q(state="accepted"), name="quote_one_accepted_per_rfq"
            ),
            models.CheckConstraint(
                name="quote_has_a_side",
                condition=Q(bid_price__isnull=False, bid_size__gt=0)
                | Q(ask_price__isnull=False, ask_size__gt=0),
            ),
        ]
        indexes = [
            models.Index(fields=["rfq", "-id"], name="quote_rfq_id_idx"),
            models.Index(
                fields=["firm", "rfq"], condition=Q(state="active"), name="quote_firm_active_idx"
            ),
            models.Index(
                fields=["expires_at"], condition=Q(state="active"), name="quote_active_expiry_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"Quote {self.id}"


class QuoteLeg(models.Model):
    """Leg prices of a quote: the package bid is Σ sign x ratio x leg bid (sign +1 for a
    ``buy`` leg, -1 for a ``sell`` leg), and the same for the ask."""

    quote = models.ForeignKey(Quote, on_delete=models.CASCADE, related_name="legs")
    leg_no = models.PositiveSmallIntegerField()
    bid_price = models.DecimalField(null=True, blank=True, **PRICE)
    ask_price = models.DecimalField(null=True, blank=True, **PRICE)

    class Meta:
        ordering = ["quote", "leg_no"]
        constraints = [
            models.UniqueConstraint(fields=["quote", "leg_no"], name="quote_leg_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.quote_id} leg {self.leg_no}"


class Trade(models.Model):
    """The execution report. ``side`` is the requester's: ``buy`` lifted the maker's ask."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # One trade per RFQ and per quote, whatever the application does.
    rfq = models.OneToOneField(Rfq, on_delete=models.PROTECT, related_name="trade")
    quote = models.OneToOneField(Quote, on_delete=models.PROTECT, related_name="trade")
    requester_firm = models.ForeignKey("kernel.Firm", on_delete=models.PROTECT, related_name="+")
    requester = models.ForeignKey("kernel.Participant", on_delete=models.PROTECT, related_name="+")
    requester_serial = models.CharField(max_length=64)
    maker_firm = models.ForeignKey("kernel.Firm", on_delete=models.PROTECT, related_name="+")
    maker = models.ForeignKey("kernel.Participant", on_delete=models.PROTECT, related_name="+")
    maker_serial = models.CharField(max_length=64)
    side = models.CharField(max_length=4, choices=Side.choices)
    quantity = models.DecimalField(**PRICE)
    price = models.DecimalField(**PRICE)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["requester_firm", "-id"], name="trade_requester_idx"),
            models.Index(fields=["maker_firm", "-id"], name="trade_maker_idx"),
        ]

    def __str__(self) -> str:
        return f"Trade {self.id}"


class TradeLeg(models.Model):
    """One leg of the execution, ``side`` from the requester's point of view."""

    trade = models.ForeignKey(Trade, on_delete=models.CASCADE, related_name="legs")
    leg_no = models.PositiveSmallIntegerField()
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="+")
    side = models.CharField(max_length=4, choices=Side.choices)
    quantity = models.DecimalField(**PRICE)
    price = models.DecimalField(**PRICE)

    class Meta:
        ordering = ["trade", "leg_no"]
        constraints = [
            models.UniqueConstraint(fields=["trade", "leg_no"], name="trade_leg_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.trade_id} leg {self.leg_no}"


class Audience(models.TextChoices):
    """Which of a firm's desks an event is for: its requesters or its liquidity providers."""

    REQUESTER = "requester", _("Requester")
    MAKER = "maker", _("Maker")


class Event(models.Model):
    """One entry of a firm's event feed, rendered as that firm's desk sees the object.

    ``seq`` is allocated under :class:`EventHead`'s row lock, held to the commit, so sequence
    order is commit order: a reader that has seen ``seq`` n can never later find a committed
    event below n (the ``since=`` cursor never skips one).
    """

    seq = models.BigIntegerField(primary_key=True)
    firm = models.ForeignKey("kernel.Firm", on_delete=models.CASCADE, related_name="+")
    audience = models.CharField(max_length=16, choices=Audience.choices)
    type = models.CharField(max_length=32)
    data = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["firm", "audience", "seq"], name="event_feed_idx")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"


class EventHead(models.Model):
    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"event head {self.seq}"
