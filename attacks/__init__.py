"""Attack kinds; importing this package registers them in ``ATTACKS``."""

from snnbench.attacks import (  # noqa: F401
    autoattack,
    gradient,
    interior,
    noise,
    protocol,
    rays,
    sapgd,
    square,
    torchattacks_kind,
    transfer,
)
from snnbench.attacks.base import ATTACKS, Attack

__all__ = ["ATTACKS", "Attack"]
