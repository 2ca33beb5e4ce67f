"""The API's orjson renderer writes what DRF's JSON renderer would."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from django.utils.translation import gettext_lazy
from rest_framework.exceptions import ErrorDetail
from rest_framework.renderers import JSONRenderer

from kernel.renderers import OrjsonRenderer

SAMPLE = {
    "code": "INVALID_REQUEST",
    "message": gettext_lazy("Invalid input."),
    "details": {"fields": {"legs": {0: {"side": [ErrorDetail("Not a choice.", code="invalid")]}}}},
    "at": datetime(2026, 12, 3, 9, 30, tzinfo=UTC),
    "id": UUID("01a23b24-ceba-7460-a053-70f6c98d002c"),
    "price": Decimal("1.5"),
    "text": "ünïcode €",
}


def test_it_writes_the_same_json_as_drfs_renderer():
    ours = OrjsonRenderer().render(SAMPLE)
    theirs = JSONRenderer().render(SAMPLE)
    assert json.loads(ours) == json.loads(theirs)
    assert "ünïcode €" in ours.decode()  # UTF-8, not \\u escapes


def test_nothing_is_an_empty_body():
    assert OrjsonRenderer().render(None) == b""
