"""The Python kind tables the registry loader validates against: every attack and defense kind, every
architecture and input encoder. Importing this module imports every implementation (and torch).

It sits above ``attacks/``, ``defenses/`` and ``bench/snn/`` and below the runner and the CLI, which call
``load_registry(path, kinds=python_kinds())``; :mod:`snnbench.registry` itself imports none of them.
"""

from __future__ import annotations

from snnbench.attacks import ATTACKS
from snnbench.defenses import DEFENSES
from snnbench.registry import Kinds
from snnbench.snn.encoders import ENCODERS
from snnbench.snn.models import ARCHITECTURES
from snnbench.snn.neuron import NeuronSpec


def python_kinds() -> Kinds:
    """The registered attack/defense kinds, architectures, encoders and the neuron settings dataclass."""
    return Kinds(attacks=ATTACKS, defenses=DEFENSES, architectures=ARCHITECTURES, encoders=ENCODERS, neuron=NeuronSpec)
