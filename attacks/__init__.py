"""Attack kinds; importing this package registers them in ``ATTACKS``."""

from snnbench.attacks import autoattack, gradient, interior, noise, protocol, square, torchattacks_kind, transfer  # noqa: F401
from snnbench.attacks.base import ATTACKS, Attack

__all__ = ["ATTACKS", "Attack"]
