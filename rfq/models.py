"""RFQ domain: instruments, RFQs with their legs, quotes, trades and the event feed.

State lives in ``TextChoices`` fields. The rules about it live here, once: which rows are
open, active or due (the querysets), how a closed RFQ or quote reads (:meth:`Closable.close`,
:meth:`QuoteQuerySet.close`) and that an open RFQ or active quote past its time reads as
expired (:meth:`Lapsing.effective_state`). The services in ``rfq/services.py`` decide when a
transition happens, always under the RFQ's row lock (a quote is only ever written while its
RFQ is locked), so the database constraints below are a second line, not the mechanism.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Self, TypedDict, TypeVar, cast, overload

from django.db import models
from django.db.models import ForeignObjectRel, Q
from django.utils.translation import gettext_lazy as _

from rfq.ids import uuid7


class Digits(TypedDict):
    """The precision of a DecimalField (typed, so ``**PRICE`` checks against its keywords)."""

    max_digits: int
    decimal_places: int


PRICE: Digits = {"max_digits": 24, "decimal_places": 8}
M = TypeVar("M", bound=models.Model)


@overload
def dec(value: Decimal) -> str: ...
@overload
def dec(value: None) -> None: ...
@overload
def dec(value: Decimal | None) -> str | None: ...
def dec(value: Decimal | None) -> str | None:
    """The one text of a decimal: normalised, never in exponent form (``1E+5`` is
    ``100000``), ``None`` stays ``None``. Request hashes, error messages and the API use it."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


class Lapsing:
    """Something that lives until it is closed or its ``expires_at`` passes: an RFQ (live
    while ``open``), a quote (live while ``active``), or the list's plain row of an RFQ."""

    __slots__ = ()

    LIVE: ClassVar[str]
    EXPIRED: ClassVar[str] = "expired"
    state: str
    state_reason: str
    expires_at: datetime

    def effective_state(self, now: datetime) -> tuple[str, str]:
        """``(state, state_reason)`` as callers see them: live past its time is
        ``("expired", "expired")``, whether or not the sweep has written it yet."""
        if self.state == self.LIVE and self.expires_at <= now:
            return self.EXPIRED, "expired"
        return self.state, self.state_reason


def closing(state: str, reason: str, at: datetime) -> dict[str, Any]:
    """The fields a closing transition writes, together: the new state, why, and when."""
    return {"state": state, "state_reason": reason, "closed_at": at}


class Closable(Lapsing):
    """An RFQ or a quote: closes once, from its live state, into one of the others."""

    __slots__ = ()

    def close(self, state: str, reason: str, at: datetime) -> list[str]:
        """Close it in memory; returns the ``update_fields`` to save. Raises ``ValueError``
        if it is not live any more (a service checks that first, under the RFQ's lock)."""
        if self.state != self.LIVE:
            raise ValueError(f"{self} is {self.state}, not {self.LIVE}: it cannot close again.")
        fields = closing(state, reason, at)
        for name, value in fields.items():
            setattr(self, name, value)
        return list(fields)


def preloaded(instance: M, **related: Any) -> M:
    """Record related objects of an instance built in memory as loaded, as
    ``select_related`` / ``prefetch_related`` would have: a reverse one-to-one (``None`` for
    "there is none") or a list for a reverse foreign key. Rendering then reads them without a
    query; nothing is read back after a write."""
    for name, value in related.items():
        field = instance._meta.get_field(name)
        if field.one_to_many or field.many_to_many:
            cache = instance.__dict__.setdefault("_prefetched_objects_cache", {})
            cache[name] = list(value)
        else:
            cast(ForeignObjectRel, field).set_cached_value(instance, value)
    return instance


class Side(models.TextChoices):
    BUY = "buy", _("Buy")
    SELL = "sell", _("Sell")


def opposite(side: str) -> str:
    """The other side."""
    return Side.SELL if side == Side.BUY else Side.BUY


class InstrumentQuerySet(models.QuerySet["Instrument"]):
    """Instruments by whether they can be traded."""

    def tradable(self, now: datetime) -> Self:
        """Active instruments that have not expired at ``now``."""
        return self.filter(Q(expiry__isnull=True) | Q(expiry__gt=now), is_active=True)


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

    objects = models.Manager.from_queryset(InstrumentQuerySet)()

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


class RfqQuerySet(models.QuerySet["Rfq"]):
    """RFQs by state, chainable (``Rfq.objects.filter(firm=f).open(now)``). ``unclosed``
    is what is stored; ``open`` and ``due`` split it at ``now`` the way
    :meth:`Lapsing.effective_state` does for one RFQ."""

    def unclosed(self) -> Self:
        """Stored as open: neither filled nor cancelled, and not yet expired by the sweep."""
        return self.filter(state=Rfq.State.OPEN)

    def open(self, now: datetime) -> Self:
        """Open at ``now``: unclosed and not past its time."""
        return self.unclosed().filter(expires_at__gt=now)

    def due(self, now: datetime) -> Self:
        """Past its time at ``now`` but not yet closed: what the expiry sweep closes."""
        return self.unclosed().filter(expires_at__lte=now)

    def with_effective_state(self, state: str | None, now: datetime) -> Self:
        """The RFQs whose :meth:`~Lapsing.effective_state` at ``now`` is ``state`` (all of
        them for ``None``): ``expired`` includes the due ones, ``open`` excludes them."""
        if state == Rfq.State.OPEN:
            return self.open(now)
        if state == Rfq.State.EXPIRED:
            return self.filter(
                Q(state=Rfq.State.EXPIRED) | Q(state=Rfq.State.OPEN, expires_at__lte=now)
            )
        return self.filter(state=state) if state else self.all()

    def for_update(self, *, skip_locked: bool = False) -> Self:
        """Lock the rows in id order, the one order every transaction takes RFQ locks in (so
        two never deadlock); only the RFQ rows, not what ``select_related`` joins."""
        return self.select_for_update(skip_locked=skip_locked, of=("self",)).order_by("pk")


class Rfq(Closable, models.Model):
    class State(models.TextChoices):
        OPEN = "open", _("Open")
        FILLED = "filled", _("Filled")
        CANCELLED = "cancelled", _("Cancelled")
        EXPIRED = "expired", _("Expired")

    LIVE = State.OPEN

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

    objects = models.Manager.from_queryset(RfqQuerySet)()

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


class QuoteQuerySet(models.QuerySet["Quote"]):
    """Quotes by state, chainable, as :class:`RfqQuerySet`; bulk transitions are
    :meth:`close` (a single quote closes with :meth:`Closable.close`)."""

    def unclosed(self) -> Self:
        """Stored as active: not accepted, replaced, cancelled, traded away or swept."""
        return self.filter(state=Quote.State.ACTIVE)

    def active(self, now: datetime) -> Self:
        """Active at ``now``: unclosed and not past its time."""
        return self.unclosed().filter(expires_at__gt=now)

    def due(self, now: datetime) -> Self:
        """Past its time at ``now`` but not yet closed: what the expiry sweep closes."""
        return self.unclosed().filter(expires_at__lte=now)

    def close(self, state: str, reason: str, at: datetime) -> list["Quote"]:
        """Lock this queryset's unclosed quotes, close them in one UPDATE, and return them
        (in this queryset's order, with what it selects and prefetches) as now closed.
        Call it under the lock of their RFQs."""
        quotes: list[Quote] = list(self.unclosed().select_for_update(of=("self",)))
        if quotes:
            Quote.objects.filter(pk__in=[q.pk for q in quotes]).update(**closing(state, reason, at))
            for quote in quotes:
                quote.close(state, reason, at)
        return quotes


class Quote(Closable, models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", _("Active")
        ACCEPTED = "accepted", _("Accepted")
        REPLACED = "replaced", _("Replaced")
        CANCELLED = "cancelled", _("Cancelled")
        EXPIRED = "expired", _("Expired")
        TRADED_AWAY = "traded_away", _("Traded away")

    LIVE = State.ACTIVE

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

    objects = models.Manager.from_queryset(QuoteQuerySet)()

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


class EventType(models.TextChoices):
    """What an event says happened; the feed's ``type`` is one of these."""

    RFQ_CREATED = "rfq.created"
    RFQ_CANCELLED = "rfq.cancelled"
    RFQ_EXPIRED = "rfq.expired"
    RFQ_FILLED = "rfq.filled"
    QUOTE_CREATED = "quote.created"
    QUOTE_REPLACED = "quote.replaced"
    QUOTE_CANCELLED = "quote.cancelled"
    QUOTE_EXPIRED = "quote.expired"
    QUOTE_ACCEPTED = "quote.accepted"
    QUOTE_TRADED_AWAY = "quote.traded_away"
    TRADE_CREATED = "trade.created"


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
