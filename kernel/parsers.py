"""The API's JSON parser: DRF's, with the nesting depth bounded before the body is parsed.

Python's JSON decoder recurses once per ``[`` or ``{``, so a couple of kilobytes of brackets
end in a ``RecursionError`` (a 500) instead of a refusal. The depth is measured first, over the
whole body and without a Python loop per character: strings are cut out with one regular
expression, the brackets left over are reduced pair by pair with ``str.replace``.
"""

import io
import re
from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError

# TYPEHINT NOTE: DRF 3.18 defines get_encoding in rest_framework.parsers (its parsers call it);
# djangorestframework-stubs 3.18.1 leaves it out.
from rest_framework.parsers import JSONParser, get_encoding  # type: ignore[attr-defined]

from kernel.api import ApiError

# The deepest legitimate body (a quote's legs) is 4 levels; anything past this is refused.
MAX_JSON_DEPTH = 32

# A JSON string, escapes included (the loop unrolled, every quantifier possessive, so a hostile
# body cannot make it backtrack); a string still open at the end of the body runs to the end,
# where the decoder fails anyway.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_ONE_KIND = str.maketrans("{}", "[]")


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``text`` nests arrays and objects deeper than ``limit``.

    Only the brackets outside strings count, and both kinds alike. Each ``replace`` pass then
    removes the innermost ``[]`` pairs, so balanced brackets are gone after exactly as many
    passes as they are deep; brackets left open at the end (``[[[``) count on top. For a body
    that is not valid JSON this can only overestimate the depth the decoder would reach before
    failing, so nothing deeper than ``limit`` is ever handed to it.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # the usual body: nothing to measure
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_ONE_KIND)
    if "[" * (limit + 1) in brackets:
        return True
    passes = 0
    while passes <= limit:
        reduced = brackets.replace("[]", "")
        if reduced == brackets:
            break
        brackets = reduced
        passes += 1
    return passes + brackets.count("[") > limit


class BoundedJSONParser(JSONParser):
    """``JSONParser`` that refuses a body nested deeper than ``MAX_JSON_DEPTH`` with 400
    ``JSON_TOO_DEEP`` before the decoder sees it."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Measure the depth on the decoded text (a multi-byte charset could otherwise hide a
        bracket from a byte scan), then let DRF's parser do the rest."""
        raw = stream.read()
        try:
            text = raw.decode(get_encoding(parser_context or {}))
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        if json_depth_exceeds(text):
            raise ApiError(
                "JSON_TOO_DEEP",
                f"The JSON body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels.",
                400,
                {"max_depth": MAX_JSON_DEPTH},
            )
        return super().parse(io.BytesIO(raw), media_type, parser_context)
