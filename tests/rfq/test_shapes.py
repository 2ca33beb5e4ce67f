"""The response shapes are the schema: each closed, each built by one render function, and the
event feed carries the same shapes as the responses."""

import pytest
from typing_extensions import get_type_hints

from kernel.api import Error
from kernel.shapes import shape_schema
from rfq import shapes
from rfq.events import Draft
from rfq.models import Audience, EventType

SHAPES = [
    shapes.Rfq,
    shapes.RfqPage,
    shapes.Quote,
    shapes.QuotePage,
    shapes.Trade,
    shapes.TradePage,
    shapes.Instrument,
    shapes.InstrumentList,
    shapes.Events,
    shapes.CancelAll,
    shapes.WhoAmI,
    Error,
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.__name__)
def test_every_shape_is_a_closed_schema_with_exactly_its_declared_keys(shape):
    schema, definitions = shape_schema(shape)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(get_type_hints(shape))
    assert set(schema["required"]) == set(shape.__required_keys__)
    for sub in definitions.values():
        if sub.get("type") == "object" and "properties" in sub:
            assert sub["additionalProperties"] is False


def test_owner_only_fields_are_optional_and_the_rest_required():
    schema, _ = shape_schema(shapes.Rfq)
    assert {"client_rfq_id", "trader_id", "counterparties"}.isdisjoint(schema["required"])
    assert {"id", "state", "requester", "legs"} <= set(schema["required"])


def test_the_schema_enumerations_are_the_models_choices():
    _, definitions = shape_schema(shapes.Events)
    event = definitions["Event"]["properties"]
    assert event["type"]["enum"] == EventType.values
    data = event["data"]["anyOf"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in data} == {"RfqData", "QuoteData", "TradeData"}


def test_an_event_of_an_undeclared_type_is_refused_before_it_is_stored():
    with pytest.raises(ValueError, match="not an event type"):
        Draft(1, Audience.MAKER, "rfq.reopened", {})
    assert Draft(1, Audience.MAKER, "rfq.created", {}).type == EventType.RFQ_CREATED
