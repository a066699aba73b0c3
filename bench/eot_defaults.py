"""EOT and scoring defaults for randomized models, in one place (docs/defenses.md 4.3).

- ``AUTO_EOT``: gradient samples per step when a model declares randomness and the attack sets no ``eot``
  (>= 10, spec 4.3; StoG's ``EOTPGD`` uses 10);
- ``RAND_EOT``: EOT passes of fra31's AutoAttack ``rand`` version (its own default, 20);
- ``RANDOMIZED_DRAWS``: inference draws over which a randomized model's clean and adversarial
  predictions are scored ("correct in every draw").
"""

AUTO_EOT = 10
RAND_EOT = 20
RANDOMIZED_DRAWS = 5
