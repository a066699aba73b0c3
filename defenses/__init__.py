"""Defense recipes: one file each; importing this package registers them in ``DEFENSES``."""

from snnbench.defenses import dlif, feel, mpd_sgr, rat, sr, stog, tgo, vanilla  # noqa: F401
from snnbench.defenses.base import DEFENSES, Defense

__all__ = ["DEFENSES", "Defense"]
