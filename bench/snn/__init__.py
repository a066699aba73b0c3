"""Plain-torch SNN core: surrogates, multi-step neurons, encoders, architectures, classifier wrapper."""

from snnbench.snn.classifier import SNNClassifier
from snnbench.snn.neuron import LIFNeuron, NeuronSpec

__all__ = ["LIFNeuron", "NeuronSpec", "SNNClassifier"]
