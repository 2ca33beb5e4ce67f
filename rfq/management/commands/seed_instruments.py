"""Demo reference data: BTC and ETH perpetuals, quarterly futures and a strip of options
(idempotent; existing symbols are left alone)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from rfq.models import Instrument

UNDERLYINGS = {
    # underlying: (reference price, strike step, future tick, option tick, min size)
    "BTC": (Decimal(100000), Decimal(5000), Decimal("0.5"), Decimal("0.0005"), Decimal("0.1")),
    "ETH": (Decimal(4000), Decimal(250), Decimal("0.05"), Decimal("0.0005"), Decimal(1)),
}


def _expiries(now: datetime) -> list[datetime]:
    """The last Friday 08:00 UTC of each of the next three quarter months (Deribit style)."""
    out: list[datetime] = []
    year, month = now.year, now.month
    while len(out) < 3:
        month += 1
        if month > 12:
            year, month = year + 1, 1
        if month % 3:
            continue
        last = datetime(year + month // 12, month % 12 + 1, 1, 8, tzinfo=UTC) - timedelta(days=1)
        while last.weekday() != 4:
            last -= timedelta(days=1)
        out.append(last)
    return out


def instruments_spec(now: datetime) -> list[dict]:
    specs = []
    for u, (ref, step, ftick, otick, min_size) in UNDERLYINGS.items():
        specs.append(
            {
                "symbol": f"{u}-PERPETUAL",
                "kind": "perpetual",
                "underlying": u,
                "tick_size": ftick,
                "min_size": min_size,
            }
        )
        for expiry in _expiries(now):
            code = expiry.strftime("%d%b%y").upper().lstrip("0")
            specs.append(
                {
                    "symbol": f"{u}-{code}",
                    "kind": "future",
                    "underlying": u,
                    "expiry": expiry,
                    "tick_size": ftick,
                    "min_size": min_size,
                }
            )
            for k in range(-2, 3):
                strike = ref + k * step
                for option_type in ("call", "put"):
                    specs.append(
                        {
                            "symbol": f"{u}-{code}-{strike}-{option_type[0].upper()}",
                            "kind": "option",
                            "underlying": u,
                            "expiry": expiry,
                            "strike": strike,
                            "option_type": option_type,
                            "quote_currency": u,  # options are priced in the underlying
                            "tick_size": otick,
                            "min_size": min_size,
                        }
                    )
    return specs


class Command(BaseCommand):
    help = "Create the demo instruments (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = 0
        for spec in instruments_spec(timezone.now()):
            symbol = spec.pop("symbol")
            _, new = Instrument.objects.get_or_create(symbol=symbol, defaults=spec)
            created += new
        self.stdout.write(f"instruments: {created} created, {Instrument.objects.count()} in all")
