"""One casing for every error code: upper snake case, from the app and from nginx alike."""

import json
import re
from pathlib import Path

import pytest

from kernel.api import ApiError
from kernel.errors import Conflict, DomainError, error_code

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy/nginx/keyline.conf.template"


@pytest.mark.parametrize("code", ["rate_limited", "Rfq_Not_Open", "RFQ-NOT-OPEN", "", "_X", "X_"])
def test_a_code_in_another_casing_is_refused_when_the_error_is_built(code):
    with pytest.raises(ValueError, match="upper snake case"):
        DomainError(code, "message")
    with pytest.raises(ValueError, match="upper snake case"):
        ApiError(code, "message", 400)


def test_upper_snake_codes_are_kept_as_given():
    assert error_code("RFQ_NOT_OPEN") == "RFQ_NOT_OPEN"
    assert Conflict("CSR_KEY_REUSED", "m").code == "CSR_KEY_REUSED"


def test_every_code_nginx_answers_with_is_upper_snake_case():
    bodies = re.findall(r"return \d{3} '(\{.*?\})';", TEMPLATE.read_text())
    assert len(bodies) >= 7  # the terminator's own answers: 400, two 401s, two 404s, 413, 502, 504
    for body in bodies:
        code = json.loads(body.replace("$$", "$").replace("${api_max_body_bytes}", "1"))["code"]
        assert error_code(code) == code
