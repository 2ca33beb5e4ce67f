"""Serials are 159 random bits (pkilint cannot tell a serial of 1 from a random one) and
unique in the database."""

import itertools

import pytest
from django.db import IntegrityError

from pki.crypto import random_serial
from pki.models import Certificate
from tests.factories import certificate_row_like
from tests.keys import make_csr

pytestmark = pytest.mark.django_db

SAMPLES = 64


def test_issued_serials_are_random_159_bit_numbers(participant, issue):
    serials = [issue(participant, make_csr()).serial_int for _ in range(SAMPLES)]

    assert len(set(serials)) == SAMPLES
    assert all(0 < s < 2**159 for s in serials)
    # Uniform 159-bit numbers: nearly all are longer than 150 bits (P(fail) ~ 64 / 2**9).
    assert sum(s.bit_length() > 150 for s in serials) >= SAMPLES - 2
    # Not a counter: no two consecutive issues differ by a small amount.
    ordered = sorted(serials)
    assert min(b - a for a, b in itertools.pairwise(ordered)) > 2**64
    # Every bit position is set in some serials and clear in others (P(fail) < 1e-8).
    for bit in range(158):
        ones = sum((s >> bit) & 1 for s in serials)
        assert 8 <= ones <= SAMPLES - 8, f"bit {bit} set in {ones} of {SAMPLES}"


def test_random_serial_source_is_159_bits():
    """159 random bits, checked with bounds a working source misses with a chance below one
    in 10^12 (the old bound, no serial under 140 bits in 2,000, failed once in ~260 runs):
    none is longer; about half have the top bit (9 standard deviations of slack); none is
    shorter than 108 bits (2,000 x 2^-51)."""
    serials = [random_serial() for _ in range(2000)]
    lengths = [s.bit_length() for s in serials]
    assert max(lengths) == 159
    assert 800 <= sum(length == 159 for length in lengths) <= 1200
    assert min(lengths) >= 108


def test_database_refuses_a_duplicate_serial(participant, issue):
    first = issue(participant, make_csr())
    duplicate = certificate_row_like(first, kind=Certificate.Kind.SERVER, serial=first.serial)
    with pytest.raises(IntegrityError):
        duplicate.save()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0A:1B:2C", "a1b2c"),
        ("0x00FF", "ff"),
        (" 7E3F ", "7e3f"),
        ("0", "0"),
        ("ab" * 20, "ab" * 20),  # 20 octets: the RFC 5280 maximum
        ("01" + "00" * 20, None),  # 21 octets
        ("xyz", None),
        ("", None),
    ],
)
def test_serial_normalize(text, expected):
    from pki.crypto import serial_normalize

    assert serial_normalize(text) == expected
