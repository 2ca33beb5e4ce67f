import pytest
from django.core.exceptions import ValidationError

from kernel.lei import lei_is_valid, lei_with_check_digits, validate_lei


@pytest.mark.parametrize(
    "lei",
    ["5493001KJTIIGC8Y1R12", "529900T8BM49AURSDO55", "213800D1EI4B9WTWWD28"],  # published LEIs
)
def test_real_leis_validate(lei):
    assert lei_is_valid(lei)
    validate_lei(lei)


@pytest.mark.parametrize(
    ("lei", "code"),
    [
        ("5493001KJTIIGC8Y1R13", "lei_checksum"),
        ("5493001KJTIIGC8Y1R21", "lei_checksum"),  # transposed check digits
        ("5493001KJTIIGC8Y1R1", "lei_format"),
        ("5493001kjtiigc8y1r12", "lei_format"),
        ("", "lei_format"),
    ],
)
def test_bad_leis_are_refused_with_a_code(lei, code):
    with pytest.raises(ValidationError) as refused:
        validate_lei(lei)
    assert refused.value.code == code


def test_check_digits_are_computed():
    assert lei_with_check_digits("5493001KJTIIGC8Y1R") == "5493001KJTIIGC8Y1R12"
