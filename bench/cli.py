"""``bench`` command line (click). Thin: parse flags, call the runner, print. The only module that prints.

User errors (``BenchError``) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

import click

from snnbench.cli_common import Number, report_unreadable, results_db_options, user_errors
from snnbench.cli_common import progress as _progress
from snnbench.cli_common import registry_option as _common
from snnbench.errors import BenchError
from snnbench.paths import database_url, persistent_url, results_dir
from snnbench.specs import MAX_EOT, MAX_STEPS, MAX_T, MIN_STEP

EPILOG = """\b
Examples:
  bench run --defense vanilla --attack pgd          # digits, train (cached) + PGD-7 at eps 0.1
  bench run --defense vanilla --attack fgsm --attack pgd --eps 0.05
  bench run --defense vanilla --attack pgd --checkpoint model.pt   # evaluate a given state dict
  bench ls attacks
"""


def _eps(value: str | None, flag: str = "--eps") -> float | None:
    """A budget or step size in pixel units (``0.1``, ``8/255``); -0 becomes 0 (one stored row)."""
    if value is None:
        return None
    from snnbench.specs import check_step, parse_number

    return check_step(parse_number(value, flag), flag, zero_ok=flag == "--eps")


def check_run_flags(o: dict) -> None:
    """Bounds of ``bench run``'s numeric flags and --device, checked before any work (each names its flag)."""
    from snnbench.specs import MAX_EOT, MAX_STEPS, check_seed

    for name, v in (("--T", o["T"]), ("--epochs", o["epochs"]), ("--batch-size", o["batch_size"])):
        if v is not None and v < 1 and not (name == "--epochs" and v == 0):
            raise BenchError(f"{name} must be >= 1, got {v}")
    if o["steps"] is not None and not 1 <= o["steps"] <= MAX_STEPS:
        raise BenchError(f"--steps must be in [1, {MAX_STEPS}], got {o['steps']}")
    if o["eot"] is not None and not 1 <= o["eot"] <= MAX_EOT:
        raise BenchError(f"--eot must be in [1, {MAX_EOT}] (EOT samples per gradient), got {o['eot']}")
    if o["n_eval"] is not None and o["n_eval"] < 1:
        raise BenchError(f"--n-eval must be >= 1 (omit it for the whole test set), got {o['n_eval']}")
    if o["gamma"] is not None and not o["gamma"] > 0:
        raise BenchError(f"--gamma must be > 0, got {o['gamma']}")
    if o["lr"] is not None and not 0 < o["lr"] < float("inf"):
        raise BenchError(f"--lr must be a finite number > 0, got {o['lr']}")
    if o["seed"] is not None:
        check_seed(o["seed"], "--seed")
    if o["device"] is not None:
        from snnbench.train import check_device

        check_device(o["device"])


class BenchGroup(click.Group):
    """Click's group with the README's error format: a usage error is one line ``error: ...`` naming the
    command's ``--help`` (click prints three lines starting ``Usage:`` / ``Error:``), exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            click.echo(f"error: {e.format_message()}{where}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # non-standalone click returns Exit's code (--help: 0)


@click.group(cls=BenchGroup, epilog=EPILOG)
@click.version_option(package_name="snnbench")
def main() -> None:
    """snnbench: train or load spiking networks with a defense recipe, attack them honestly, store every
    number, and render the papers' comparison tables.

    Defaults follow the papers (docs/defenses.md); the embedded default dataset is scikit-learn's digits,
    so everything works offline. Registry: registry.yaml (override with --registry or $BENCH_REGISTRY).

    \b
    Environment: $BENCH_DB, $BENCH_RESULTS, $BENCH_CHECKPOINTS (where results live);
    $BENCH_LOCK_TIMEOUT (seconds to wait for another process's database write lock, default 60);
    $BENCH_TRAIN_LOCK_TIMEOUT (seconds to wait for another process training the same model, default 86400).
    Every user error is one line `error: ...` and exit code 2; report, check, export and `ls runs`
    open the database read-only and create nothing.
    """


@main.command(epilog=EPILOG)
@click.option("--defense", "-d", default=None, help="Defense config name (bench ls defenses).")
@click.option("--attack", "-a", "attacks", multiple=True, help="Attack config name; repeatable (bench ls attacks).")
@click.option("--suite", default=None, help="Run every missing cell of a suite instead (bench ls suites).")
@click.option("--dataset", default="digits", show_default=True, help="Dataset name, or a path to an .npz file / ImageFolder dir.")
@click.option("--model", default=None, help="Model name (default: the dataset's default_model).")
@click.option("--training", type=click.Choice(["standard", "at"]), default=None, help="Plain or PGD adversarial training.")
@click.option("--epochs", type=Number(0, 100_000, integer=True), default=None, help="Training epochs (default: dataset's).")
@click.option("--batch-size", type=Number(1, 1 << 16, integer=True), default=None, help="Training batch size.")
@click.option("--T", "T", type=Number(1, MAX_T, integer=True), default=None, help="Simulation time steps.")
@click.option("--seed", type=Number(0, 2**32 - 1, integer=True), default=None, help="Training seed.")
@click.option("--lr", type=Number(1e-8), default=None, help="Learning rate.")
@click.option("--eps", default=None, help="Attack budget in pixel units, e.g. 0.1 or 8/255 (default: dataset's).")
@click.option("--alpha", default=None, help="Attack step size (default: dataset's).")
@click.option("--steps", type=Number(1, MAX_STEPS, integer=True), default=None, help="Attack iterations.")
@click.option("--grad-mode", type=click.Choice(["bptt", "bptr", "bptr_rga", "cba", "hart"]), default=None,
              help="Attacker's gradient mode (cba: the ReLU ANN sharing the weights; hart: HART's time-averaged "
              "gradient, ICLR 2024).")
@click.option("--eot", type=Number(1, MAX_EOT, integer=True), default=None, help="EOT samples (default: 10 for randomized defenses, else 1).")
@click.option("--surrogate", default=None, help="Attacker's surrogate gradient (default: the model's own): triangle, rectangle, sigmoid, "
              "superspike, atan, or the adaptive assg (ASSG; --gamma is its a) and pdsg.")
@click.option("--gamma", type=Number(MIN_STEP, 1000.0), default=None, help="Attacker's surrogate width (default: the model's own).")
@click.option("--eps-sweep/--no-eps-sweep", "eps_sweep", default=True, show_default=True,
              help="Short PGD eps sweep after the attacks (the accuracy-vs-eps monotonicity check).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Evaluate this state dict instead of training.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              help="Shared checkpoint directory (default: $BENCH_CHECKPOINTS or RESULTS/checkpoints).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Where torchvision datasets live.")
@click.option("--n-eval", type=Number(1, 10**8, integer=True), default=None,
              help="Evaluate the first N test samples, 1 <= N <= the test set size (default: all).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when available).")
@click.option("--channels", type=click.Choice(["first", "last"]), default=None,
              help="Channel axis of a 4-D .npz dataset ([N, C, H, W] or [N, H, W, C]) when its shape is ambiguous.")
@click.option("--results-dir", type=click.Path(file_okay=False), default=None, help="Checkpoints and SQLite DB [results].")
@click.option("--db", default=None, help="SQLAlchemy URL (default: $BENCH_DB or sqlite:///RESULTS/bench.sqlite).")
@click.option("--force", is_flag=True, help="Re-run evaluations already stored.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or header.")
@_common
@user_errors
def run(**o) -> None:
    """Train (or load) a model with a defense, attack it, store and print the results.

    A second run with the same config loads the cached checkpoint and skips stored evaluations.
    """
    from snnbench.kinds import python_kinds
    from snnbench.pipeline import evaluate_plans
    from snnbench.plan import RunRequest, resolve
    from snnbench.prepare import ensure_writable
    from snnbench.registry import load_registry
    from snnbench.store import Store

    check_run_flags(o)
    reg = load_registry(o["registry"], kinds=python_kinds())
    if o["suite"] or not o["defense"] or not o["attacks"]:
        from snnbench.cli_suite import run_suite_command

        return run_suite_command(reg, o)
    req = RunRequest(
        defense=o["defense"],
        attacks=tuple(o["attacks"]),
        dataset=o["dataset"],
        model=o["model"],
        train_overrides={k: o[k] for k in ("epochs", "batch_size", "T", "seed", "lr", "training")},
        attack_overrides={"eps": _eps(o["eps"]), "alpha": _eps(o["alpha"], "--alpha"), "steps": o["steps"],
                          "grad_mode": o["grad_mode"], "eot": o["eot"], "surrogate": o["surrogate"], "gamma": o["gamma"]},
        checkpoint=o["checkpoint"],
        checkpoint_dir=o["checkpoint_dir"],
        data_root=o["data_root"],
        n_eval=o["n_eval"],
        device=o["device"],
        channels=o["channels"] or "",
    )
    plan = resolve(reg, req)
    results = results_dir(o["results_dir"])
    url = persistent_url(database_url(o["db"], results))
    ensure_writable(results)
    store = Store(url)
    quiet = o["quiet"]
    if not quiet:
        _print_header(plan, store.url)
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # rows written from here on ran now (store's clock, microseconds)
    with _StageLines(quiet):
        prep = evaluate_plans(reg, [plan], store, results, force=o["force"], progress=_progress(quiet),
                              eps_sweep=o["eps_sweep"])
    if not quiet:
        how = f"trained in {prep.train_seconds:.1f}s" if prep.trained else "loaded"
        click.echo(f"model: {how} -> {prep.checkpoint}", err=True)
    _print_results(store, prep.run_id, plan, since=started)


class _EchoHandler(logging.Handler):
    """Writes through click to whatever stderr is current (so a test runner's capture sees it)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


class _StageLines:
    """Not a terminal (a log file, CI): one line per protocol stage on stderr, as it finishes (a terminal
    has the progress bars instead). A context manager, so the handler never outlives the command."""

    def __init__(self, quiet: bool) -> None:
        self.log = logging.getLogger("snnbench.protocol")
        self.handler: logging.Handler | None = None
        if not quiet and not sys.stderr.isatty():
            self.handler = _EchoHandler()
            self.handler.setFormatter(logging.Formatter("  stage %(message)s"))
        self.old_level = self.log.level

    def __enter__(self) -> _StageLines:
        if self.handler is not None:
            self.log.addHandler(self.handler)
            self.log.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handler is not None:
            self.log.removeHandler(self.handler)
            self.log.setLevel(self.old_level)


def _print_header(plan, db_url: str) -> None:
    t = plan.train
    lines = [
        f"dataset  {plan.dataset.name} {list(plan.dataset.shape)} ({plan.dataset.classes} classes)   eps {plan.dataset.eps:.4g}",
        f"model    {plan.model.name} ({plan.model.arch}, encoder {plan.model.encoder})   T={t.T}",
        f"defense  {plan.defense_entry.name} ({plan.defense_entry.kind})   training={t.training}",
        (f"weights  {plan.request.checkpoint} (given checkpoint: not trained here, training settings do not apply)"
         if plan.request.checkpoint else
         f"train    epochs={t.epochs} batch={t.batch_size} lr={t.lr} wd={plan.defense.weight_decay(t)} seed={t.seed}"),
        f"attacks  {', '.join(f'{e.name}(eps={a.eps:.4g})' for e, a in plan.attacks)}",
        f"device   {plan.device}   config {plan.config_hash[:12]}   db {db_url}",
    ]
    click.echo("\n".join(lines), err=True)


def _print_results(store, run_id: int, plan, since=None) -> None:  # type: ignore[no-untyped-def]
    """The run's evaluations: each attack with its budget (the site's label), robust accuracy with its 95%
    Wilson interval, and "(stored)" for an evaluation reused from the database rather than run now
    (``since``: when this command started; its seconds are then the stored run's)."""
    from snnbench.report_data import Acc, attack_label

    names = {e.name for e, _ in plan.attacks}
    rows = [e for e in store.evaluations(run_id) if e.attack in names or e.attack.split("/")[0] in names]
    header = (f"{'defense':<12} {'training':<9} {'attack (budget)':<44} {'eps':>7} {'n':>5} {'eot':>4} {'clean':>7} "
              f"{'robust [95% CI]':>22} {'sec':>9}")
    click.echo(header)
    for e in rows:
        try:
            label = attack_label(e.attack, json.loads(e.attack_config_json), e.eot)
        except ValueError:
            label = e.attack
        r = Acc(e.n_robust_correct, e.n)
        ci = f"{100 * r.value:6.2f}% [{100 * r.lo:4.1f}, {100 * r.hi:4.1f}]"
        stored = since is not None and e.created_at < since
        secs = f"{e.seconds:.2f}" + ("*" if stored else "")
        click.echo(
            f"{plan.defense_entry.name:<12} {plan.train.training:<9} {label[:44]:<44} {e.eps:>7.4f} {e.n:>5} {e.eot:>4} "
            f"{100 * e.clean_acc:>6.2f}% {ci:>22} {secs:>9}"
        )
    if since is not None and any(e.created_at < since for e in rows):
        click.echo("* (stored): reused from the database, not run now; its seconds are the stored run's (--force reruns)")
    from snnbench.protocol import cascade_lines, ranking_blockers

    budgets = set()
    for name, art in sorted(store.artifacts(run_id, "protocol").items()):
        if name in names:
            click.echo("\n".join(cascade_lines(art)))
            budgets.add(str(art.get("budget", "full")))
    flags = [f for f in store.flags(run_id)
             if f.scope in names or f.scope.split("/")[0] in names or f.scope in ("run", "model")]
    flags.sort(key=lambda f: f.ok)  # failed checks first
    if flags:
        failed = sum(not f.ok for f in flags)
        click.echo(f"checks: {failed} failed of {len(flags)}" + (" (potentially unreliable)" if failed else ""))
    for f in flags:
        value = "" if f.value is None else f"{f.value:.4g}"
        click.echo(f"  {'ok' if f.ok else 'FAIL':<4} {f.scope:<24} {f.kind:<19} {value:>8}  {f.message}")
    failed_names = [f"{f.kind} ({f.scope})" for f in flags if not f.ok]
    blocking = sorted({b for name, art in store.artifacts(run_id, "protocol").items() if name in names
                       for b in ranking_blockers(failed_names, name, str(art.get("budget", "full")))})
    if blocking and budgets:
        click.echo(f"UNRELIABLE, NOT RANKED: the protocol's robust accuracy is an upper bound (failed: {', '.join(blocking)})")


@main.command()
@_common
@user_errors
def validate(registry: str | None) -> None:
    """Validate registry.yaml in full (names, types, references, params of every kind)."""
    from snnbench.kinds import python_kinds
    from snnbench.registry import load_registry

    reg = load_registry(registry, kinds=python_kinds())
    counts = ", ".join(f"{len(getattr(reg, s))} {s}" for s in ("datasets", "models", "defenses", "attacks", "suites"))
    click.echo(f"{reg.path}: ok ({counts})")


@main.command(name="ls")
@click.argument("what", type=click.Choice(["datasets", "models", "defenses", "attacks", "suites", "runs"]))
@results_db_options
@_common
@user_errors
def ls(what: str, registry: str | None, results_dir: str | None, db: str | None) -> None:
    """List the registry's datasets, models, defenses, attacks or suites, or the stored runs (``runs``:
    status trained / running / failed, with the reason of a failure; the database is opened read-only)."""
    if what == "runs":
        return _ls_runs(results_dir, db)
    from snnbench.attacks import ATTACKS
    from snnbench.defenses import DEFENSES
    from snnbench.kinds import python_kinds
    from snnbench.registry import load_registry

    reg = load_registry(registry, kinds=python_kinds())
    table = getattr(reg, what)
    for name, item in sorted(table.items()):
        if what == "datasets":
            line = f"{item.source:<15} {list(item.shape)} eps={item.eps:.4g}  {item.description}"
        elif what == "models":
            line = f"{item.arch:<12} encoder={item.encoder:<8} {item.description}"
        elif what == "defenses":
            impl = DEFENSES.get(item.kind)  # the loader checked every kind against the code
            paper = f" ({impl.paper})" if impl.paper else ""
            rnd = " [randomized: EOT]" if _built_randomized(reg, name) else ""
            line = f"{item.kind:<10} {item.description or impl.description}{paper}{rnd}"
        elif what == "attacks":
            impl = ATTACKS.get(item.kind)
            line = f"{item.kind:<10} {item.description or impl.description}  [{_capabilities(impl)}]"
            if impl.composite:
                from snnbench.protocol import describe

                line += "\n" + " " * 30 + describe(str(item.params.get("budget", "full")), str(item.params.get("version", "v1")))
        else:
            line = f"{item.dataset}/{item.model}  {len(item.row_labels)} rows x {len(item.col_labels)} columns = {len(item.cells)} cells  {item.description}"
        click.echo(f"{name:<18} {line}")


def _capabilities(cls) -> str:
    """The attack's capability attributes in a few words (attacks/base.py)."""
    if cls.from_store:
        return "from stored outcomes"
    words = [cls.norm or "no norm", "bounded" if cls.bounded else "unbounded"]
    words.append("composite" if cls.composite else "transfer" if cls.transfer
                 else "gradient-free" if cls.gradient_free else "gradient")
    return ", ".join(words)


def _built_randomized(reg, defense: str) -> bool:
    """Whether the defense's model samples at inference, asked of the built model (not a class flag):
    a config may switch its randomness on or off (``tgo`` vs ``tgo_eot``)."""
    from snnbench.plan import make_defense
    from snnbench.train import build_model

    ds = reg.datasets["digits"]
    _, d = make_defense(reg, defense)
    return bool(build_model(ds, reg.models[ds.default_model], d, 2).randomized)


def _ls_runs(results_dir: str | None, db: str | None) -> None:
    from snnbench.cli_common import open_store as _store

    store, _ = _store(db, results_dir, create=False)
    click.echo(f"{'id':>4} {'status':<8} {'dataset':<10} {'model':<12} {'defense':<14} {'training':<8} {'T':>3} {'seed':>5} config")
    for r in store.runs():
        reason = f"  ({store.failure(r.id)})" if r.status == "failed" else ""
        click.echo(
            f"{r.id:>4} {r.status:<8} {r.dataset:<10} {r.model:<12} {r.defense:<14} {r.training:<8} {r.T:>3} "
            f"{r.seed:>5} {r.config_hash[:12]}{reason}"
        )
    report_unreadable(store)


from snnbench.cli_report import check, export, report  # noqa: E402  (leaderboard and CI gate commands)

for _cmd in (report, check, export):
    main.add_command(_cmd)


from snnbench.cli_perf import perf_cmd  # noqa: E402  (`bench perf`)

main.add_command(perf_cmd)

from snnbench.cli_sweep import sweep  # noqa: E402  (`bench sweep`: missing suite cells, local or on Ray)

main.add_command(sweep)

from snnbench.cli_rm import rm  # noqa: E402  (`bench rm`: delete runs by id or defense, after confirmation)

main.add_command(rm)
from snnbench.cli_import import import_cmd  # noqa: E402  (`bench import`: reference checkpoints, issue 11)

main.add_command(import_cmd)
from snnbench.cli_submit import submit  # noqa: E402  (`bench submit`: verify and import a submission bundle, issue 23)

main.add_command(submit)

if __name__ == "__main__":  # pragma: no cover
    main()
