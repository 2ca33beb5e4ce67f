"""ISO 17442 Legal Entity Identifiers: 20 characters, the last two ISO 7064 MOD 97-10 check
digits over the first 18."""

import re

from django.core.exceptions import ValidationError

_LEI_RE = re.compile(r"^[0-9A-Z]{18}[0-9]{2}$")


def _as_number(chars: str) -> int:
    # ISO 7064 MOD 97-10: letters become 10..35, digits stay themselves.
    return int("".join(str(int(c, 36)) for c in chars))


def lei_is_valid(value: str) -> bool:
    return bool(_LEI_RE.match(value)) and _as_number(value) % 97 == 1


def lei_with_check_digits(prefix18: str) -> str:
    """Complete an 18-character LEI prefix with its check digits."""
    if not re.fullmatch(r"[0-9A-Z]{18}", prefix18):
        raise ValueError("an LEI prefix is 18 characters of 0-9 and A-Z")
    check = 98 - (_as_number(prefix18 + "00") % 97)
    return f"{prefix18}{check:02d}"


def validate_lei(value: str) -> None:
    if not _LEI_RE.match(value or ""):
        raise ValidationError(
            "An LEI is 20 characters: 18 letters or digits, then 2 check digits.",
            code="lei_format",
        )
    if not lei_is_valid(value):
        raise ValidationError(
            "This LEI's check digits do not match (ISO 17442); check it for a typing error.",
            code="lei_checksum",
        )
