"""Attack kinds; importing this package registers them in ``ATTACKS``."""

from snnbench.attacks import (  # noqa: F401
    autoattack,
    gradient,
    interior,
    noise,
    rays,
    sapgd,
    square,
    standard,
    torchattacks_kind,
    transfer,
)
from snnbench.attacks.base import ATTACKS, Attack

__all__ = ["ATTACKS", "Attack"]
