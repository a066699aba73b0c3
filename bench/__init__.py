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
``snnbench.api``; the command line is ``bench`` (``bench --help``).
"""

__version__ = "0.1.0"

# The public API, imported on first use (PEP 562) so that `bench --help` and the read-only commands do not
# pay for torch and the attack libraries: `import snnbench` is cheap, `snnbench.evaluate` loads the rest.
_EXPORTS = {
    "BenchError": "snnbench.errors",
    "ForeignModel": "snnbench.adapters",
    "attacker_controls": "snnbench.adapters",
    "ModelCard": "snnbench.api",
    "Report": "snnbench.api",
    "evaluate": "snnbench.api",
    "leaderboard": "snnbench.api",
    "load_dataset": "snnbench.api",
    "results": "snnbench.api",
    "suite": "snnbench.api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Load a public name from the module that defines it (``_EXPORTS``)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'snnbench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
