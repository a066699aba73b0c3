"""``python -m snnbench`` = the ``bench`` console script."""

from snnbench.cli import main

main()
