"""What to evaluate: a request resolved into a :class:`Plan` (dataset, model, attacks, config hash).

A plan's model is either a **recipe** (an architecture, a defense recipe and a training spec that snnbench
trains, or loads from the checkpoint cache or a given checkpoint: ``bench run``, suites, sweeps) or an
**external** module (a user's own ``nn.Module`` handed to :func:`snnbench.evaluate`). Everything after
planning is one pipeline for both (:func:`snnbench.pipeline.evaluate_plans`).

Config precedence, implemented only in :func:`resolve`: CLI flag > suite entry > dataset defaults
(``datasets.<name>.train`` in registry.yaml) > ``TrainSpec`` defaults. The resolved config is hashed
(canonical JSON) to address the checkpoint and the database row; an external model's config holds its
weights' sha256 and its card, so the same weights evaluated again find their run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snnbench.attacks import ATTACKS
from snnbench.attacks.base import Attack
from snnbench.data import Data, infer_custom_spec
from snnbench.defenses import DEFENSES
from snnbench.defenses.base import Defense
from snnbench.errors import BenchError
from snnbench.registry import BenchRegistry
from snnbench.specs import (
    ATSpec,
    DatasetSpec,
    Entry,
    ModelSpec,
    TrainSpec,
    canonical_hash,
    check_attack_params,  # issue 16: attack bounds
    from_mapping,
    regular_file,
    to_dict,
)
from snnbench.train import sha256_file

EVAL_SEED = 0  # the seed of an external model's clean draw and check batches (it has no training seed)

TRAIN_OVERRIDE_KEYS = ("epochs", "batch_size", "T", "seed", "lr", "training")


ATTACK_OVERRIDE_KEYS = ("eps", "alpha", "steps", "grad_mode", "surrogate", "gamma", "eot", "seed")


@dataclass(frozen=True)
class RunRequest:
    """What the user asked for (CLI flags or one suite cell); None = use the default."""

    defense: str
    attacks: tuple[str, ...] = ()
    dataset: str = "digits"
    model: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    attack_overrides: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_dir: str | None = None  # shared checkpoint directory (default $BENCH_CHECKPOINTS, results/checkpoints)
    data_root: str | None = None
    n_eval: int | None = None
    eval_batch_size: int = 256
    device: str | None = None
    channels: str = ""  # channel axis of a user's 4-D .npz images: first | last | "" (inferred)


@dataclass(frozen=True)
class ModelCard:
    """Who the model is: shown on the leaderboard's run page and stored as the ``model_card`` artifact."""

    name: str
    description: str = ""
    paper: str = ""
    randomized: bool = False
    randomized_source: str = "declared"  # declared | detected
    module: str = ""  # the model's class, e.g. "mypkg.nets.MySNN"
    libraries: tuple[str, ...] = ()
    attacker_controls: tuple[str, ...] = ()
    weights_sha256: str = ""


@dataclass(frozen=True)
class Recipe:
    """A model snnbench builds: architecture, defense recipe and training (trained, or loaded)."""

    model: ModelSpec
    defense_entry: Entry
    defense: Defense
    train: TrainSpec


@dataclass
class External:
    """A user's own module (:func:`snnbench.evaluate`): the model the harness attacks (an
    ``SNNClassifier`` or the :class:`~snnbench.adapters.ForeignModel` around the user's module), its card,
    its declared time steps (0: not declared) and the data already loaded for the probe batch."""

    module: nn.Module
    card: ModelCard
    T: int = 0
    data: Data | None = None


@dataclass
class Plan:
    """One evaluation request, resolved: the model (exactly one of ``recipe`` / ``external``), the data,
    the attacks (each a single attack, the standard protocol's cascade or the per-sample worst case), and
    the config hash that addresses the run."""

    dataset: DatasetSpec
    attacks: list[tuple[Entry, Attack]]
    config: dict[str, Any]
    config_hash: str
    device: torch.device
    n_eval: int
    request: RunRequest
    recipe: Recipe | None = None
    external: External | None = None
    #: black-box substitutes by training ("standard": vanilla; "at": vanilla with PGD AT), seed + 1, for
    #: the attacks that need them (``Attack.substitute_trainings``: transfer, the protocol's transfer stage)
    substitutes: dict[str, Plan] = field(default_factory=dict)

    @property
    def substitute(self) -> Plan | None:
        """The vanilla (standard-training) substitute, if any."""
        return self.substitutes.get("standard")

    def _recipe(self, what: str) -> Recipe:
        if self.recipe is None:
            raise BenchError(f"plan of external model {self.request.defense!r} has no {what} (not a snnbench recipe)")
        return self.recipe

    @property
    def model(self) -> ModelSpec:
        return self._recipe("architecture").model

    @property
    def defense(self) -> Defense:
        return self._recipe("defense").defense

    @property
    def defense_entry(self) -> Entry:
        return self._recipe("defense").defense_entry

    @property
    def train(self) -> TrainSpec:
        return self._recipe("training spec").train

    @property
    def seed(self) -> int:
        """The seed of reproducible draws outside attacks (clean scoring, histograms): the training seed of
        a recipe, :data:`EVAL_SEED` for an external model."""
        return self.recipe.train.seed if self.recipe is not None else EVAL_SEED


def dataset_identity(dataset: DatasetSpec) -> dict[str, Any]:
    """The dataset's part of a config hash: its spec without the threat model and metadata (and the channel
    layout only when one was given, so configs from before the field hash as they did)."""
    skip = {"eps", "alpha", "description", "eval_samples", *(("channels",) if not dataset.channels else ())}
    return {k: v for k, v in to_dict(dataset).items() if k not in skip}


def resolve_dataset(reg: BenchRegistry, name: str, channels: str = "") -> DatasetSpec:
    """A registry name, or a path to the user's .npz file / ImageFolder directory (``channels``: the
    channel axis of 4-D .npz images, "" = inferred)."""
    if name in reg.datasets:
        return reg.datasets[name]
    p = Path(name)
    if p.suffix == ".npz" or p.is_dir():
        if not p.exists():
            raise BenchError(f"--dataset {name}: no such file or directory")
        return infer_custom_spec(p, reg.datasets["digits"], channels)
    raise _unknown_dataset(reg, name)


def _unknown_dataset(reg: BenchRegistry, name: str) -> BenchError:
    from snnbench.errors import did_you_mean

    return BenchError(f"--dataset: unknown dataset {name!r}; {did_you_mean(name, reg.datasets)} (or a path to .npz / ImageFolder)")


def make_defense(reg: BenchRegistry, name: str, where: str = "--defense") -> tuple[Entry, Defense]:
    entry: Entry = reg.get("defenses", name, where)
    cls = DEFENSES.get(entry.kind, f"defenses.{name}.kind")
    return entry, cls(from_mapping(cls.Params, entry.params, f"defenses.{name}.params"))


def make_attack(reg: BenchRegistry, name: str, dataset: DatasetSpec, overrides: dict[str, Any]) -> tuple[Entry, Attack]:
    entry: Entry = reg.get("attacks", name, "--attack")
    cls = ATTACKS.get(entry.kind, f"attacks.{name}.kind")
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    params = {**entry.params, **{k: v for k, v in overrides.items() if k in fields and v is not None}}
    p = from_mapping(cls.Params, params, f"attacks.{name}.params")
    check_attack_params(p, f"attacks.{name}.params")  # steps >= 1, alpha > 0, bounded eot/seed (bench/specs.py)
    eps = getattr(p, "eps", None)
    if eps is not None and not 0 <= eps <= 1:
        raise BenchError(f"eps {eps} is outside [0, 1]; eps is in pixel units (e.g. 8/255 for CIFAR, 0.1 for digits)")
    atk = cls(p, dataset.eps, dataset.alpha)
    return entry, atk


def resolve(reg: BenchRegistry, req: RunRequest, suite_train: dict[str, Any] | None = None) -> Plan:
    """Merge defaults, suite and CLI into a plan; every user error surfaces here, before torch work."""
    dataset = resolve_dataset(reg, req.dataset, req.channels)
    model: ModelSpec = reg.get("models", req.model or dataset.default_model, "--model")
    entry, defense = make_defense(reg, req.defense)
    merged = {**dataset.train, **(suite_train or {}), **{k: v for k, v in req.train_overrides.items() if v is not None}}
    if isinstance(merged.get("at"), dict):
        merged["at"] = from_mapping(ATSpec, merged["at"], "train.at")
    train_spec: TrainSpec = from_mapping(TrainSpec, {k: v for k, v in merged.items() if k != "at"}, "train")
    if "at" in merged:
        train_spec = dataclasses.replace(train_spec, at=merged["at"])
    attacks = [make_attack(reg, a, dataset, req.attack_overrides) for a in req.attacks]
    attacks.sort(key=lambda ea: ea[1].from_store)  # `worst` reads the others' stored outcomes: last
    device = torch.device(req.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available here; use --device cpu")
    config = {
        "dataset": dataset_identity(dataset),
        "model": to_dict(model),
        "defense": {"kind": entry.kind, "params": to_dict(defense.params)},
        "train": to_dict(train_spec),
        "format": 1,
    }
    if req.checkpoint:
        given = Path(req.checkpoint)
        if given.exists() and not given.is_file():  # a FIFO would block the hash below
            regular_file(given, "--checkpoint")
        config["checkpoint_sha256"] = sha256_file(given) if given.is_file() else "missing"
    n_eval = req.n_eval if req.n_eval is not None else dataset.eval_samples
    plan = Plan(dataset, attacks, config, canonical_hash(config), device, n_eval, req,
                recipe=Recipe(model, entry, defense, train_spec))
    for training in substitute_trainings(attacks):
        plan.substitutes[training] = resolve(reg, substitute_request(req, train_spec, training), suite_train)
    return plan


def substitute_trainings(attacks: list[tuple[Entry, Attack]]) -> list[str]:
    """The substitutes the attacks need, by training, in a fixed order (standard first)."""
    wanted = {t for _, a in attacks for t in a.substitute_trainings}
    return [t for t in ("standard", "at") if t in wanted]


def substitute_request(req: RunRequest, train: TrainSpec, training: str = "standard") -> RunRequest:
    """The black-box substitute (RAT/FEEL/MPD-SGR): same data, model and T, vanilla training (``training``:
    standard, or PGD AT for the protocol's ensemble), seed + 1; trained or loaded through the same
    checkpoint cache."""
    overrides = {**req.train_overrides, "seed": train.seed + 1, "training": training}
    return dataclasses.replace(req, defense="vanilla", attacks=(), train_overrides=overrides, checkpoint=None)


def plan_external(
    reg: BenchRegistry,
    external: External,
    dataset: DatasetSpec,
    attack_names: list[str],
    overrides: dict[str, Any],
    n_eval: int,
    device: torch.device,
    batch_size: int,
    substitute: bool = True,
    dataset_arg: str | None = None,
    data_root: str | None = None,
) -> Plan:
    """The plan of a user's module: attacks resolved through the registry (:func:`make_attack`, the same
    bounds and names as ``bench run``), the config hashed from the dataset and the model card (the
    weights' sha256 is the identity; description and paper are metadata); with ``substitute``, also the
    plan of the transfer substitute (:func:`substitute_plan`)."""
    card = external.card
    attacks = [make_attack(reg, a, dataset, overrides) for a in attack_names]
    for entry, atk in attacks:
        if atk.needs_substitute and not atk.composite and not substitute:  # the protocol skips its stage
            raise BenchError(
                f"attack {entry.name!r} needs a substitute model; substitute=False turned it off"
            )
    attacks.sort(key=lambda ea: ea[1].from_store)  # `worst` reads the others' stored outcomes: last
    config = {
        "dataset": dataset_identity(dataset),
        "external": {
            k: v for k, v in to_dict(card).items() if k not in ("description", "paper")
        },  # metadata: not identity
        "format": 1,
    }
    request = RunRequest(
        defense=card.name,
        attacks=tuple(attack_names),
        dataset=dataset.name,
        n_eval=n_eval,
        data_root=data_root,
        eval_batch_size=batch_size,
        device=str(device),
    )
    plan = Plan(dataset, attacks, config, canonical_hash(config), device, n_eval, request, external=external)
    if substitute:
        for training in substitute_trainings(attacks):
            plan.substitutes[training] = substitute_plan(reg, dataset_arg or dataset.name, device, data_root, training)
    return plan


def substitute_plan(reg: BenchRegistry, dataset: str, device: torch.device, data_root: str | None,
                    training: str = "standard") -> Plan:
    """The black-box substitute of a foreign model, as a recipe :class:`Plan` that the pipeline's
    ``attach_substitutes`` trains (or loads from the checkpoint cache) and hands to the transfer attacks.

    The papers' substitute is a vanilla model of the *same* architecture (docs/defenses.md, "Black-box"); a
    foreign architecture cannot be rebuilt here, so the substitute is snnbench's vanilla model of the
    dataset's default architecture, seed 1, ``training`` standard (the same config as ``bench run --defense
    vanilla --seed 1``, so either reuses the other's checkpoint) or ``at`` (PGD AT, the protocol v2's second
    substitute; ``--training at --seed 1``). The recipes' default seed is 42.
    A transfer attack needs only a well-trained model on the same data: a weaker substitute can make the
    transfer stage weaker, never the reported number higher.
    """
    req = RunRequest(
        defense="vanilla",
        dataset=dataset,
        train_overrides={"seed": 1, "training": training},
        data_root=data_root,
        device=str(device),
    )
    return resolve(reg, req)
