"""snnbench: robustness benchmark and leaderboard for spiking neural networks (Python API).

Evaluate any ``torch.nn.Module`` that maps images in [0, 1] to logits, record it in the results database
(it then appears in ``bench report``), and read every stored number as a pandas DataFrame::

    import snnbench
    report = snnbench.evaluate(my_snn, dataset="digits", attacks=["fgsm", "pgd"], n=200,
                               name="my-snn", paper="https://...", randomized=False)
    print(report)                                  # attack, eps, n, eot, clean_acc, robust_acc, seconds
    df = snnbench.results()                        # runs x evaluations
    df.pivot_table(index="name", columns="attack", values="robust_acc")
    snnbench.leaderboard()                         # the ranking `bench report` draws

Models from spikingjelly or snntorch: their neurons are found and reset for you, and the attacker's
surrogate gradient is swapped into them (:class:`ForeignModel`, ``attacker_controls``). Reference
checkpoints: ``bench import --format snnrat CKPT --model wrn16_4 -o OUT.pt``. The same functions live in
``bench.api``; the command line is ``bench`` (``bench --help``).
"""

from bench.adapters import ForeignModel, attacker_controls
from bench.api import ModelCard, Report, evaluate, leaderboard, load_dataset, results, suite
from bench.errors import BenchError

__all__ = [
    "BenchError",
    "ForeignModel",
    "ModelCard",
    "Report",
    "attacker_controls",
    "evaluate",
    "leaderboard",
    "load_dataset",
    "results",
    "suite",
]
