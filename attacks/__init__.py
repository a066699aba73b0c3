"""Attack kinds; importing this package registers them in ``ATTACKS``."""

from attacks import autoattack, gradient, noise, protocol, square, torchattacks_kind, transfer  # noqa: F401
from attacks.base import ATTACKS, Attack

__all__ = ["ATTACKS", "Attack"]
