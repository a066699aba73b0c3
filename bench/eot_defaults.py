"""Every default for randomized models in one place (torch-free leaf module).

A model is *randomized* when a part samples at inference (Poisson coding, StoG gates, noisy neurons);
Athalye et al. (ICML 2018) show a single-draw gradient or verdict then overstates robustness. The numbers
below are the only defaults the code uses for such models; explicit ``eot`` settings in registry.yaml or
on the command line override the first two.
"""

from __future__ import annotations

AUTO_EOT = 10
"""EOT samples per input gradient for gradient attacks on a randomized model, when the attack config leaves
``eot`` unset (docs/defenses.md 4.3: at least 10 samples for randomized defenses). Used by
:meth:`attacks.base.Attack.eot_samples`; 1 for deterministic models."""

RAND_EOT = 20
"""EOT iterations of AutoAttack's ``rand`` version (fra31/auto-attack ``autoattack.py::set_version``:
``eot_iter = 20`` for APGD-CE/APGD-DLR), used when ``version`` resolves to ``rand``."""

RANDOMIZED_DRAWS = 5
"""Independent inference passes that score a randomized model (clean and adversarial): a sample counts
as correct only when it is correct in every draw (:func:`snnbench.scoring.evaluate_attack`)."""
