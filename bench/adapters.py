"""Foreign models: give any ``nn.Module`` (images in [0, 1] -> logits) the interface the harness reads.

The runner and the attacks read four things from a model: ``randomized`` (EOT on or off), ``neurons()`` /
``recording()`` (snnbench neurons whose pre-spike potentials a defense or a histogram reads), and
``gradient_mode(mode, surrogate, gamma)`` (the attacker's gradient mode and surrogate, set by
:class:`~bench.snn.classifier.AttackerView`). :class:`ForeignModel` provides them for a model snnbench did
not build, and says in ``attacker_controls`` (a subset of ``{"surrogate", "grad_mode"}``) which of the
attacker's knobs actually reach the model, so a protocol can skip a surrogate stage on a plain model with a
stated reason instead of running it to no effect.

Neuron adapters find spiking neurons of other libraries and swap the attacker's surrogate gradient
(:data:`bench.snn.surrogate.SURROGATES` at width ``gamma``) into them for the duration of an attack step:

- spikingjelly (``spikingjelly.activation_based.neuron.BaseNode`` subclasses; the module attribute
  ``surrogate_function``): the swapped-in object is an ``nn.Module`` whose forward is the node's own
  Heaviside (spikes unchanged) and whose backward is ours. spikingjelly 2.0 routes a surrogate that is not
  one of its own classes to its plain-torch reference path (``functional.lif_multi_step``), so the kernel
  never sees it. Multi-step nodes (``step_mode='m'``, input ``[T, N, ...]``) also take ``grad_mode="bptr"``:
  forward spikes unchanged, gradient gated by ``1[mean_t S > 0]`` (SNN-RAT ``RateBp``; bench/snn/neuron.py).
- snntorch (``snntorch._neurons.SpikingNeuron`` subclasses; the attribute ``spike_grad``, a function):
  surrogate only; snntorch neurons are single-step modules called in the user's own time loop, so a
  rate-based gradient cannot be set per neuron.
- snnbench's own :class:`~bench.snn.neuron.LIFNeuron` inside a foreign wrapper: both knobs.

State: spikingjelly nodes keep their membrane between calls and snntorch neurons built with
``init_hidden=True`` keep theirs in the module; an attack library calls the model many times, so
:class:`ForeignModel` resets every neuron it found before each forward (``reset=True``). Without that reset
an unreset network looks randomized (docs/ecosystem.md, finding 5 [M1]).

Example::

    import spikingjelly.activation_based.neuron as sj
    net = MyNet()                                  # uses sj.LIFNode(step_mode="m")
    model = ForeignModel(net, randomized=False)
    model.attacker_controls                        # frozenset({'surrogate', 'grad_mode'})
    with model.gradient_mode("bptt", "atan", 2.0):  # the attacker's surrogate, spikes unchanged
        loss = F.cross_entropy(model(x), y)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from snnbench.contract import OutputRule, check_output_rule, to_logits
from snnbench.errors import BenchError, did_you_mean
from snnbench.snn.classifier import record_neurons
from snnbench.snn.neuron import GRAD_MODES, LIFNeuron, RateMask
from snnbench.snn.surrogate import POTENTIAL_SURROGATES, SURROGATES

CONTROLS = frozenset({"surrogate", "grad_mode"})
#: Attacker's surrogate width when none is given: the width each family is used with in the papers'
#: code (triangle/rectangle 1: SNN-RAT ZIF; sigmoid 4 and atan 2: SR code; superspike 10: Zenke &
#: Ganguli's beta). A foreign neuron has no snnbench NeuronSpec to take its own width from.
DEFAULT_GAMMA = {"triangle": 1.0, "rectangle": 1.0, "sigmoid": 4.0, "superspike": 10.0, "atan": 2.0}


class SwappedSpike(torch.autograd.Function):
    """Forward: the library's own spikes (computed beforehand, so the forward is unchanged bit for bit);
    backward: ``grad_out * h(z)`` with the attacker's surrogate ``h`` of width ``gamma``."""

    @staticmethod
    def forward(ctx, z: Tensor, spikes: Tensor, grad_fn: Callable, gamma: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.grad_fn, ctx.gamma = grad_fn, gamma
        return spikes.clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return grad_out * ctx.grad_fn(z, ctx.gamma), None, None, None


def swapped(original: Callable[[Tensor], Tensor], surrogate: str, gamma: float) -> Callable[[Tensor], Tensor]:
    """``z -> spikes``: the library function's forward, our surrogate's backward."""
    grad_fn = SURROGATES[surrogate]

    def spike_fn(z: Tensor) -> Tensor:
        with torch.no_grad():
            s = original(z)
        return SwappedSpike.apply(z, s.to(z.dtype), grad_fn, float(gamma))

    return spike_fn


class SurrogateModule(nn.Module):
    """A spikingjelly-compatible ``surrogate_function`` (a module called on ``v - v_th``)."""

    def __init__(self, original: nn.Module, surrogate: str, gamma: float) -> None:
        super().__init__()
        self.fn = swapped(original, surrogate, gamma)
        self.surrogate, self.gamma = surrogate, gamma

    def forward(self, z: Tensor) -> Tensor:
        return self.fn(z)

    def extra_repr(self) -> str:
        return f"attacker surrogate={self.surrogate}, gamma={self.gamma}"


@dataclass(frozen=True)
class NeuronAdapter:
    """How to find one library's spiking neurons and steer them.

    Attributes:
        library: display name (stored with every foreign run).
        find: ``model -> [neuron modules]`` (empty when the library is absent or unused).
        controls: which attacker knobs reach these neurons (for ``grad_mode``: ``bptt`` and ``bptr``).
        surrogate: context manager swapping the attacker's surrogate into a list of neurons.
        grad_mode: context manager setting a gradient mode on a list of neurons (None: not supported).
        reset: clears the neurons' state before a forward.
    """

    library: str
    find: Callable[[nn.Module], list[nn.Module]]
    controls: frozenset[str]
    surrogate: Callable[[list[nn.Module], str, float], object]
    grad_mode: Callable[[list[nn.Module], str], object] | None
    reset: Callable[[list[nn.Module]], None]


# --- spikingjelly --------------------------------------------------------------------------------------
def _sj_find(model: nn.Module) -> list[nn.Module]:
    try:  # absent, or unusable (a missing dependency): then no model here can hold its neurons
        from spikingjelly.activation_based.neuron import BaseNode
    except ImportError:
        return []

    return [m for m in model.modules() if isinstance(m, BaseNode) and hasattr(m, "surrogate_function")]


@contextmanager
def _replaced(neurons: list[nn.Module], attr: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """Set ``n.<attr> = make(original)`` on every neuron for the block, then put the originals back."""
    saved = [getattr(n, attr) for n in neurons]
    for n, orig in zip(neurons, saved, strict=True):
        setattr(n, attr, make(orig))
    try:
        yield
    finally:
        for n, orig in zip(neurons, saved, strict=True):
            setattr(n, attr, orig)


def _sj_surrogate(neurons: list[nn.Module], surrogate: str, gamma: float):
    return _replaced(neurons, "surrogate_function", lambda orig: SurrogateModule(orig, surrogate, gamma))


def _rate_forward(node: nn.Module) -> Callable[..., Tensor]:
    """BPTR for a multi-step node: the node's spikes, gradient ``dL/dX[t] = dL/dS[t] 1[mean_t S > 0]``."""
    forward = type(node).forward.__get__(node)

    def rate_forward(x_seq: Tensor, *args, **kwargs) -> Tensor:
        with torch.no_grad():
            s_seq = forward(x_seq, *args, **kwargs)  # [T, N, ...]
        return RateMask.apply(x_seq, s_seq.to(x_seq.dtype))

    return rate_forward


@contextmanager
def _sj_grad_mode(neurons: list[nn.Module], mode: str) -> Iterator[None]:
    if mode == "bptt":
        yield
        return
    for n in neurons:
        n.forward = _rate_forward(n)  # instance attribute shadows the class's forward
    try:
        yield
    finally:
        for n in neurons:
            del n.forward


def _sj_reset(neurons: list[nn.Module]) -> None:
    for n in neurons:
        n.reset()


def _sj_controls(neurons: list[nn.Module]) -> frozenset[str]:
    multi = all(getattr(n, "step_mode", "s") == "m" for n in neurons)
    return CONTROLS if multi else frozenset({"surrogate"})


# --- snntorch ------------------------------------------------------------------------------------------
def _snntorch_find(model: nn.Module) -> list[nn.Module]:
    try:
        from snntorch._neurons import SpikingNeuron
    except ImportError:
        return []

    return [m for m in model.modules() if isinstance(m, SpikingNeuron) and hasattr(m, "spike_grad")]


def _snntorch_surrogate(neurons: list[nn.Module], surrogate: str, gamma: float):
    return _replaced(neurons, "spike_grad", lambda orig: swapped(orig, surrogate, gamma))


def _snntorch_reset(neurons: list[nn.Module]) -> None:
    """Per-instance reset (``snntorch.utils.reset`` resets every instance in the process, snntorch #438).

    Every neuron, not only ``init_hidden`` ones: a ``Leaky`` called without ``mem`` reuses ``self.mem``."""
    for n in neurons:
        if callable(getattr(n, "reset_mem", None)):
            n.reset_mem()


# --- snnbench's own neurons inside a foreign wrapper ---------------------------------------------------
def _own_find(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, LIFNeuron)]


@contextmanager
def _own_surrogate(neurons: list[nn.Module], surrogate: str, gamma: float) -> Iterator[None]:
    saved = [n.attack_surrogate for n in neurons]
    for n in neurons:
        n.attack_surrogate = (surrogate, gamma)
    try:
        yield
    finally:
        for n, s in zip(neurons, saved, strict=True):
            n.attack_surrogate = s


@contextmanager
def _own_grad_mode(neurons: list[nn.Module], mode: str) -> Iterator[None]:
    saved = [n.grad_mode for n in neurons]
    for n in neurons:
        n.grad_mode = mode
    try:
        yield
    finally:
        for n, g in zip(neurons, saved, strict=True):
            n.grad_mode = g


ADAPTERS: tuple[NeuronAdapter, ...] = (
    NeuronAdapter("spikingjelly", _sj_find, CONTROLS, _sj_surrogate, _sj_grad_mode, _sj_reset),
    NeuronAdapter(
        "snntorch", _snntorch_find, frozenset({"surrogate"}), _snntorch_surrogate, None, _snntorch_reset
    ),
    NeuronAdapter("snnbench", _own_find, CONTROLS, _own_surrogate, _own_grad_mode, lambda neurons: None),
)


@dataclass
class Found:
    """The neurons one adapter found in a model, and the knobs they expose."""

    adapter: NeuronAdapter
    neurons: list[nn.Module]
    controls: frozenset[str]


def find_neurons(model: nn.Module) -> list[Found]:
    """Every adapter's neurons in ``model`` (adapters whose library is absent find nothing)."""
    out = []
    for a in ADAPTERS:
        neurons = a.find(model)
        if neurons:
            controls = _sj_controls(neurons) if a.library == "spikingjelly" else a.controls
            out.append(Found(a, neurons, controls))
    return out


class ForeignModel(nn.Module):
    """Any ``nn.Module`` mapping images in [0, 1] (``[B, C, H, W]``) to logits ``[B, K]``, seen by the harness.

    Args:
        model: the user's network. Normalisation, encoding and the time loop belong inside it.
        randomized: the user's declaration that the forward pass samples at inference (Poisson coding,
            noisy neurons, stochastic gates). It turns EOT and multi-draw scoring on; the run's
            ``randomized_logits`` check compares it with what identical calls actually do.
        reset: clear the state of every spikingjelly / snntorch neuron found before each forward (keep it
            on unless ``model.forward`` resets them itself).
        output: how the raw output becomes logits ``[B, K]`` (:mod:`snnbench.contract`: ``"auto"``,
            ``"logits"``, ``"rate"``, ``"membrane"`` or a callable). The model is called on a copy of its
            input, so an in-place edit of ``x`` cannot change the benchmark's test data.

    Attributes:
        attacker_controls: the knobs of :meth:`gradient_mode` that reach the model: ``"surrogate"`` when
            every spiking neuron found can take the attacker's surrogate, ``"grad_mode"`` when every one can
            also take BPTR. Empty for a model whose neurons no adapter recognises (its own gradient is
            the only one an attacker gets).
        libraries: the libraries whose neurons were found.

    Example::

        model = ForeignModel(my_net, randomized=False)
        with model.gradient_mode("bptt"):    # always allowed: the model's own gradient
            logits = model(x)
    """

    def __init__(self, model: nn.Module, randomized: bool, reset: bool = True, output: OutputRule = "auto") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise BenchError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.output = check_output_rule(output)
        self.contract = None  # the ContractReport of snnbench.contract.probe_model, set by evaluate
        self.declared_randomized = bool(randomized)
        self.reset_state = reset
        self.train(model.training)
        found = find_neurons(model)
        self._found = found
        self.libraries = tuple(f.adapter.library for f in found)
        controls = CONTROLS
        for f in found:
            controls = controls & f.controls
        self.attacker_controls: frozenset[str] = controls if found else frozenset()

    @property
    def randomized(self) -> bool:
        return self.declared_randomized

    def neurons(self) -> list[LIFNeuron]:
        """snnbench neurons only (the ones that record pre-spike potentials); foreign ones: :meth:`spiking_neurons`."""
        return [n for f in self._found if f.adapter.library == "snnbench" for n in f.neurons]

    def spiking_neurons(self) -> list[nn.Module]:
        return [n for f in self._found for n in f.neurons]

    def controls_reason(self) -> str:
        """Why a knob is missing, in one sentence (for a protocol's 'skipped' note)."""
        if not self._found:
            return (
                "no spiking neurons of a supported library (spikingjelly, snntorch, snnbench) were found, "
                "so the attacker can only use the model's own gradient"
            )
        if "grad_mode" not in self.attacker_controls:
            return "snntorch neurons and single-step spikingjelly nodes take a surrogate but no rate-based (BPTR) gradient"
        return "every knob reaches the model"

    def recording(self):
        """Record ``v_pre`` and spikes of the snnbench neurons found, for the block."""
        return record_neurons(self.neurons())

    def unsupported(self, mode: str = "bptt", surrogate: str | None = None) -> str:
        """Why :meth:`gradient_mode` cannot set ``mode`` / ``surrogate`` on this model ("" when it can)."""
        if mode not in GRAD_MODES:
            return f"grad_mode: {mode!r} is not a gradient mode; {did_you_mean(mode, GRAD_MODES)}"
        own = all(f.adapter.library == "snnbench" for f in self._found)
        if surrogate is not None and surrogate not in SURROGATES and not (
            surrogate in POTENTIAL_SURROGATES and own and self._found
        ):
            if surrogate in POTENTIAL_SURROGATES:
                return (f"the adaptive surrogate {surrogate!r} needs snnbench neurons (it reads each neuron's "
                        "membrane statistics); this model's neurons are from another library")
            return f"surrogate: {surrogate!r} is unknown; {did_you_mean(surrogate, SURROGATES)}"
        if mode != "bptt" and "grad_mode" not in self.attacker_controls:
            return f"grad_mode {mode!r} does not reach this model: {self.controls_reason()}"
        if mode == "bptr_rga" and not own:
            return "grad_mode 'bptr_rga' needs snnbench neurons (it reads their leak tau); use 'bptr'"
        if mode == "hart" and not own:
            return "grad_mode 'hart' needs snnbench neurons (it detaches their membrane carry-over); use 'bptr'"
        if surrogate is not None and "surrogate" not in self.attacker_controls:
            return f"surrogate {surrogate!r} does not reach this model: {self.controls_reason()}"
        return ""

    @contextmanager
    def gradient_mode(self, mode: str = "bptt", surrogate: str | None = None, gamma: float | None = None):
        """Set the attacker's gradient mode and surrogate on every neuron found, for the block.

        ``bptt`` without a surrogate is always allowed (the model's own gradient); anything else needs the
        matching entry of :attr:`attacker_controls`, else a :class:`BenchError` says why it is missing.
        """
        why = self.unsupported(mode, surrogate)
        if why:
            raise BenchError(why)
        with ExitStack() as stack:
            for f in self._found:
                if surrogate is not None:
                    g = gamma if gamma is not None else DEFAULT_GAMMA.get(surrogate, 1.0)
                    stack.enter_context(f.adapter.surrogate(f.neurons, surrogate, g))
                if f.adapter.grad_mode is not None:
                    stack.enter_context(f.adapter.grad_mode(f.neurons, mode))
            yield self

    def forward(self, x: Tensor) -> Tensor:
        if self.reset_state:
            for f in self._found:
                f.adapter.reset(f.neurons)
        return to_logits(self.model(x.clone()), self.output, len(x))


def attacker_controls(model: nn.Module) -> frozenset[str]:
    """The knobs a model exposes: its ``attacker_controls`` attribute, else both (snnbench's own classifier)."""
    return frozenset(getattr(model, "attacker_controls", CONTROLS))
