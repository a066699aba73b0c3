"""snnbench: robustness benchmark and leaderboard for spiking neural networks."""

__version__ = "0.1.0"
