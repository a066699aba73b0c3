"""The Python kind tables the registry loader validates against: every attack and defense kind, every
architecture and input encoder. Importing this module imports every implementation (and torch).

It sits above ``attacks/``, ``defenses/`` and ``bench/snn/`` and below the runner and the CLI, which call
``load_registry(path, kinds=python_kinds())``; :mod:`bench.registry` itself imports none of them.
"""

from __future__ import annotations

from attacks import ATTACKS
from bench.registry import Kinds
from bench.snn.encoders import ENCODERS
from bench.snn.models import ARCHITECTURES
from bench.snn.neuron import NeuronSpec
from defenses import DEFENSES


def python_kinds() -> Kinds:
    """The registered attack/defense kinds, architectures, encoders and the neuron settings dataclass."""
    return Kinds(attacks=ATTACKS, defenses=DEFENSES, architectures=ARCHITECTURES, encoders=ENCODERS, neuron=NeuronSpec)
