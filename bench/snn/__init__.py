"""Plain-torch SNN core: surrogates, multi-step neurons, encoders, architectures, classifier wrapper."""

from bench.snn.classifier import SNNClassifier
from bench.snn.neuron import LIFNeuron, NeuronSpec

__all__ = ["LIFNeuron", "NeuronSpec", "SNNClassifier"]
