"""Vanilla surrogate-gradient BPTT training (docs/defenses.md 2.1)."""

from __future__ import annotations

from snnbench.defenses.base import DEFENSES, Defense


@DEFENSES.register("vanilla")
class Vanilla(Defense):
    """Plain CE on mean-over-T logits, SGD 0.1 / momentum 0.9 / wd 5e-4 / cosine (SNN-RAT ``main_train.py``
    with ``--special l2``). Under ``training: at`` it is the papers' "AT" baseline: PGD eps 2/255 (CIFAR),
    2 steps, alpha eps/2, random start, BPTT (FEEL/MPD-SGR convention, docs/defenses.md 1.6).

    Deviation: the reference code keeps the checkpoint with the best *test* accuracy; we keep the last
    epoch, so no test information leaks into model selection. Deterministic at inference; no EOT needed.
    """

    paper = "surrogate-gradient BPTT baseline (Ding et al. code base)"
    description = "plain CE training, no defense (the tables' vanilla/AT rows)"
