"""What stopping a firm would stop, asked before an officer confirms a suspension.

The portal suspends firms and may not import the apps that trade (``portal`` and ``rfq`` sit
side by side in the layers); each such app answers :data:`firm_stop_preview` with what it
would close. The portal sends it and lists the answers on the confirmation page.
"""

from dataclasses import dataclass, field
from typing import cast

from django.dispatch import Signal

# Sent with ``firm_id``; each receiver returns a list of :class:`Impact`.
firm_stop_preview = Signal()


@dataclass(frozen=True)
class Impact:
    """``count`` things of one kind (named ``one`` or ``many``) that would be closed, and a few
    of them by id (``examples``) so the officer can recognise them."""

    one: str
    many: str
    count: int
    examples: list[str] = field(default_factory=list)

    @property
    def what(self) -> str:
        """The kind's name for ``count`` of them: "1 open RFQ", "2 open RFQs"."""
        return self.one if self.count == 1 else self.many


def firm_stop_impacts(firm_id: int) -> list[Impact]:
    """Every app's answer, in the order the apps registered. Reads only."""
    impacts: list[Impact] = []
    for _receiver, answer in firm_stop_preview.send(sender=None, firm_id=firm_id):
        impacts.extend(cast(list[Impact], answer))
    return impacts
