"""Every response shape of the RFQ API, defined once (see :mod:`kernel.shapes`): the render
functions of :mod:`rfq.render` return these, mypy checks they do, and the OpenAPI schema is
generated from them. The event feed carries the same shapes as the responses.

Fields marked ``NotRequired`` are shown only to their owner (the requester's or the quoting
firm); they are absent, not null, for anyone else.
"""

from typing import Annotated, NotRequired

from pydantic import Field, WithJsonSchema
from typing_extensions import TypedDict

from kernel import models as kernel_models
from kernel.shapes import DecimalStr, Timestamp, Uuid, choices_schema
from rfq import models

SideName = Annotated[str, WithJsonSchema(choices_schema(models.Side))]
RfqState = Annotated[str, WithJsonSchema(choices_schema(models.Rfq.State))]
QuoteState = Annotated[str, WithJsonSchema(choices_schema(models.Quote.State))]
DeskRole = Annotated[str, WithJsonSchema(choices_schema(models.Audience))]
EventType = Annotated[str, WithJsonSchema(choices_schema(models.EventType))]
InstrumentKind = Annotated[str, WithJsonSchema(choices_schema(models.Instrument.Kind))]
OptionType = Annotated[
    str | None,
    WithJsonSchema({"anyOf": [choices_schema(models.Instrument.OptionType), {"type": "null"}]}),
]
FirmRole = Annotated[str, WithJsonSchema(choices_schema(kernel_models.Firm.Role))]
ParticipantRole = Annotated[str, WithJsonSchema(choices_schema(kernel_models.Participant.Role))]

OWNER_RFQ = "Only to the requester's firm."
OWNER_QUOTE = "Only to the quoting firm."


class Firm(TypedDict):
    lei: str
    legal_name: str


class Instrument(TypedDict):
    symbol: str
    kind: InstrumentKind
    underlying: str
    quote_currency: str
    expiry: Timestamp | None
    strike: DecimalStr | None
    option_type: OptionType
    tick_size: DecimalStr
    min_size: DecimalStr


class InstrumentList(TypedDict):
    results: list[Instrument]


class RfqLeg(TypedDict):
    leg_no: int
    instrument: str
    side: SideName
    ratio: DecimalStr
    quantity: DecimalStr


class Rfq(TypedDict):
    id: Uuid
    state: RfqState
    state_reason: str
    quantity: DecimalStr
    legs: list[RfqLeg]
    anonymous: bool
    requester: Annotated[Firm | None, Field(description="Hidden from makers when anonymous.")]
    created_at: Timestamp
    expires_at: Timestamp
    closed_at: Timestamp | None
    client_rfq_id: NotRequired[Annotated[str | None, Field(description=OWNER_RFQ)]]
    trader_id: NotRequired[Annotated[str, Field(description=OWNER_RFQ)]]
    counterparties: NotRequired[Annotated[list[Firm], Field(description=OWNER_RFQ)]]


class RfqPage(TypedDict):
    results: list[Rfq]
    next_cursor: str | None


class QuoteLeg(TypedDict):
    leg_no: int
    bid_price: DecimalStr | None
    ask_price: DecimalStr | None


class Quote(TypedDict):
    id: Uuid
    rfq_id: Uuid
    state: QuoteState
    state_reason: str
    maker: Firm
    bid_price: DecimalStr | None
    bid_size: DecimalStr | None
    ask_price: DecimalStr | None
    ask_size: DecimalStr | None
    legs: list[QuoteLeg]
    replaces: Uuid | None
    replaced_by: Uuid | None
    created_at: Timestamp
    expires_at: Timestamp
    closed_at: Timestamp | None
    client_quote_id: NotRequired[Annotated[str | None, Field(description=OWNER_QUOTE)]]
    trader_id: NotRequired[Annotated[str, Field(description=OWNER_QUOTE)]]


class QuotePage(TypedDict):
    results: list[Quote]
    next_cursor: str | None


class CancelAll(TypedDict):
    cancelled: list[Uuid]


class TradeLeg(TypedDict):
    leg_no: int
    instrument: str
    side: SideName
    quantity: DecimalStr
    price: DecimalStr


class Trade(TypedDict):
    id: Uuid
    rfq_id: Uuid
    quote_id: Uuid
    role: DeskRole
    side: Annotated[SideName, Field(description="The viewer's side.")]
    quantity: DecimalStr
    price: DecimalStr
    legs: list[TradeLeg]
    requester: Firm
    maker: Firm
    created_at: Timestamp
    client_rfq_id: NotRequired[Annotated[str | None, Field(description="To the requester.")]]
    client_quote_id: NotRequired[Annotated[str | None, Field(description="To the maker.")]]
    trader_id: Annotated[str, Field(description="Your firm's trader on this trade.")]


class TradePage(TypedDict):
    results: list[Trade]
    next_cursor: str | None


class RfqData(TypedDict):
    rfq: Rfq


class QuoteData(TypedDict):
    quote: Quote


class TradeData(TypedDict):
    trade: Trade


class Event(TypedDict):
    seq: int
    type: EventType
    created_at: Timestamp
    data: Annotated[
        RfqData | QuoteData | TradeData,
        Field(description="{rfq}, {quote} or {trade} (by the type's prefix), as you see it."),
    ]


class Events(TypedDict):
    events: list[Event]
    next_since: Annotated[int, Field(description="Pass as since= on the next call.")]


class WhoAmIFirm(Firm):
    role: FirmRole


class WhoAmIParticipant(TypedDict):
    trader_id: str
    name: str
    role: ParticipantRole
    san_uri: str


class WhoAmICertificate(TypedDict):
    serial: str
    fingerprint_sha256: str
    not_after: Timestamp
    days_to_expiry: int


class WhoAmI(TypedDict):
    firm: WhoAmIFirm
    participant: WhoAmIParticipant
    certificate: WhoAmICertificate
    checked_at: Timestamp
