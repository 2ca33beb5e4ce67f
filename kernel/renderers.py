"""The API's JSON renderer: orjson instead of the standard library's encoder.

Answers are the shapes' plain dicts (:mod:`kernel.shapes`) and the error shape, so almost
everything is str, int, bool, None, list or dict, which orjson encodes natively (a 50-RFQ page
several times faster than ``json``). What DRF and Django may still hand over — lazy
translations, decimals, datetimes, UUIDs in validation details — goes through DRF's own encoder,
so the output is what ``rest_framework.renderers.JSONRenderer`` would write.
"""

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

_fallback = JSONEncoder()
# Validation details key list items by index (ints): written as strings, as json does; times
# go through DRF's encoder (milliseconds, "Z"), as DRF writes them.
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def _default(value: Any) -> Any:
    return _fallback.default(value)


class OrjsonRenderer(JSONRenderer):
    """``application/json``, UTF-8, compact; an empty body for ``None``."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        return orjson.dumps(data, default=_default, option=_OPTIONS)
