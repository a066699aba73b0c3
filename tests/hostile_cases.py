"""Hostile and careless inputs (issue 16): one catalogue shared by tests/test_hostile.py and a probe.

Each :class:`Case` builds its input under a fresh directory (a results database with one run row already
in it), runs one ``bench`` command, and says what a correct snnbench does:

- ``error``: exit 2, exactly one line ``error: ...`` (no traceback), database content unchanged, no new
  file anywhere under the directory;
- ``failed``: exit 2, one line, and the run row it created is marked ``failed`` with the reason;
- ``ok``: exit 0 and the case's own ``post`` check holds (e.g. a corrupt partial checkpoint moved aside);
- ``suite``: exit 2 after a summary whose last line is ``error: ...``, the other cells stored.

Probe (counts tried / clean / traceback / hang / silent wrong result / DB changed; subprocesses with a
timeout, patched cases in-process)::

    PYTHONPATH=. python tests/hostile_cases.py [--timeout 60] [-k substring]
    BENCH_PROBE_PYTHONPATH=OVERLAY python tests/hostile_cases.py   # the commands run another checkout's code
                                                                   # (inputs built with this one's helpers)
"""

from __future__ import annotations

import errno
import io
import os
import sqlite3
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RUN = ["run", "-q", "--defense", "vanilla", "--attack", "fgsm", "--device", "cpu", "--n-eval", "20",
       "--no-eps-sweep", "--epochs", "1", "--T", "2"]


@dataclass
class Ctx:
    """The case's directory, its database URL and results directory."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "db" / "bench.sqlite"

    @property
    def db(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def run(self, *extra: str) -> list[str]:
        return [*RUN, "--results-dir", str(self.results), "--db", self.db, *extra]


@dataclass
class Case:
    id: str
    bullet: str  # wrong | dos | dbchange | traceback | readonly | dataloss | minor
    setup: Callable[[Ctx], list[str]]
    expect: str = "error"  # error | failed | ok | ok_or_error | suite
    env: dict[str, str] = field(default_factory=dict)
    post: Callable[[Ctx], str | None] | None = None  # ok cases: None when right, else what is wrong
    patch: Callable | None = None  # in-process fault injection: patch(monkeypatch)
    fragment: str = ""  # text the error line must contain
    slow: bool = False
    pre: Callable[[Ctx], list[str]] | None = None  # a command run (successfully) before the case


# --- builders ---------------------------------------------------------------------------------------------
_INIT_DB = """
import sys
from snnbench.store import RunInfo, Store
store = Store(sys.argv[1])
store.upsert_run(RunInfo("e" * 64, {}, "digits", "small_conv", "vanilla", "standard", 4, 0))
store.engine.dispose()
"""


def init_db(ctx: Ctx) -> None:
    """The case's database with one run row, written by the code under test (the probed checkout's own
    schema when ``BENCH_PROBE_PYTHONPATH`` names another one)."""
    ctx.db_path.parent.mkdir(parents=True, exist_ok=True)
    ctx.results.mkdir(parents=True, exist_ok=True)
    other = os.environ.get("BENCH_PROBE_PYTHONPATH")
    if other:
        import subprocess

        subprocess.run([sys.executable, "-c", _INIT_DB, ctx.db], env={**os.environ, "PYTHONPATH": other}, check=True)
    else:
        exec(_INIT_DB.replace("sys.argv[1]", repr(ctx.db)), {})
    with sqlite3.connect(ctx.db_path) as c:  # fold the WAL in: the file alone is the database
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def db_dump(ctx: Ctx) -> list[str]:
    """Logical content of the database (every row of every table, minus nothing)."""
    if not ctx.db_path.exists():
        return []
    c = sqlite3.connect(f"file:{ctx.db_path}?mode=ro", uri=True)
    try:
        return list(c.iterdump())
    finally:
        c.close()


def run_status(ctx: Ctx) -> list[tuple[str, str]]:
    c = sqlite3.connect(f"file:{ctx.db_path}?mode=ro", uri=True)
    try:
        return [(r[0], r[1]) for r in c.execute("SELECT config_hash, status FROM run")]
    finally:
        c.close()


def files_under(root: Path) -> set[str]:
    skip = ("bench.sqlite-wal", "bench.sqlite-shm", "bench.sqlite-journal")
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.name.endswith(skip)}


def npz(ctx: Ctx, x_train, y_train, x_test=None, y_test=None, name: str = "data.npz") -> str:
    p = ctx.root / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(p, x_train=x_train, y_train=y_train, x_test=x_train if x_test is None else x_test,
                        y_test=y_train if y_test is None else y_test)
    return str(p)


def imagefolder(ctx: Ctx, train: dict[str, int], test: dict[str, int], size: int = 8) -> Path:
    from PIL import Image

    root = ctx.root / "in" / "folder"
    g = np.random.default_rng(0)
    for split, classes in (("train", train), ("test", test)):
        for cls, n in classes.items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(g.integers(0, 256, (size, size), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (gray, 8 bit) with one tiny IDAT."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def registry_with(ctx: Ctx, mutate: Callable[[dict], None]) -> str:
    import yaml

    from snnbench.registry import DEFAULT_PATH

    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    mutate(raw)
    p = ctx.root / "in" / "registry.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def write_file(ctx: Ctx, name: str, data: bytes | str) -> str:
    p = ctx.root / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(p)


def plan_for(ctx: Ctx, *extra: str, registry: str | None = None):
    """The plan `bench run` would resolve for RUN + extra (to find checkpoint paths)."""
    from snnbench.plan import RunRequest, resolve
    from snnbench.registry import load_registry

    overrides = {"epochs": 1, "T": 2}
    for k, v in zip(extra[::2], extra[1::2], strict=True):
        overrides[k.lstrip("-").replace("-", "_")] = float(v) if k == "--lr" else int(v)
    req = RunRequest(defense="vanilla", attacks=("fgsm",), train_overrides=overrides, n_eval=20, device="cpu")
    from snnbench.kinds import python_kinds

    return resolve(load_registry(registry, kinds=python_kinds()), req)


def model_state(ctx: Ctx) -> dict:
    import torch

    from snnbench.train import build_model

    plan = plan_for(ctx)
    torch.manual_seed(0)
    return build_model(plan.dataset, plan.model, plan.defense, plan.train.T).state_dict()


def checkpoint(ctx: Ctx, mutate: Callable[[dict], object], name: str = "ck.pt") -> str:
    import torch

    obj = mutate(model_state(ctx))
    p = ctx.root / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, p)
    return str(p)


def _first_float(sd: dict) -> str:
    return next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)


def _with(sd: dict, fn) -> dict:
    k = _first_float(sd)
    sd = dict(sd)
    sd[k] = fn(sd[k])
    return sd


def ck_case(cid: str, fn, fragment: str = "") -> Case:
    return Case(cid, "wrong" if cid in ("ck_nan", "ck_inf", "ck_int", "ck_bool") else "traceback",
                lambda c: c.run("--checkpoint", checkpoint(c, fn)), fragment=fragment)


def _partial_path(ctx: Ctx) -> Path:
    plan = plan_for(ctx)
    d = ctx.results / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{plan.config_hash[:32]}.partial.pt"


def corrupt_partial(ctx: Ctx) -> list[str]:
    _partial_path(ctx).write_bytes(b"PK\x03\x04 truncated zip")
    return ctx.run()


def partial_without_optimizer(ctx: Ctx) -> list[str]:
    import torch

    torch.save({"format": 1, "state_dict": model_state(ctx), "epoch": 1}, _partial_path(ctx))
    return ctx.run()


def moved_aside(ctx: Ctx) -> str | None:
    d = ctx.results / "checkpoints"
    aside = list(d.glob("*.partial.pt.corrupt*"))
    if not aside:
        return f"no *.partial.pt.corrupt* under {d}: {sorted(p.name for p in d.iterdir())}"
    if any(s != "trained" for h, s in run_status(ctx) if h != "e" * 64):
        return f"run not trained: {run_status(ctx)}"
    return None


def one_eval_row(ctx: Ctx) -> str | None:
    c = sqlite3.connect(f"file:{ctx.db_path}?mode=ro", uri=True)
    rows = c.execute("SELECT eps FROM evaluation").fetchall()
    c.close()
    return None if len(rows) == 1 else f"eps 0 and -0 stored as {len(rows)} rows: {rows}"


def failing_suite(ctx: Ctx) -> list[str]:
    """A suite of two rows (T=2 and T=3); the T=3 model's cached checkpoint is corrupt."""
    suite = {"dataset": "digits", "train": {"epochs": 1}, "n_eval": 20, "columns": ["clean"],
             "rows": [{"defense": "vanilla", "T": 3}, {"defense": "vanilla", "T": 2}]}
    reg = registry_with(ctx, lambda raw: raw["suites"].update({"two": suite}))
    from snnbench.kinds import python_kinds
    from snnbench.registry import load_registry
    from snnbench.suites import plan_cell

    r = load_registry(reg, kinds=python_kinds())
    bad = plan_cell(r, r.suites["two"], r.suites["two"].cells[0], "cpu")
    d = ctx.results / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{bad.config_hash[:32]}.pt").write_bytes(b"not a checkpoint")
    return ["run", "-q", "--suite", "two", "--registry", reg, "--results-dir", str(ctx.results), "--db", ctx.db,
            "--device", "cpu"]


def suite_recorded(ctx: Ctx) -> str | None:
    c = sqlite3.connect(f"file:{ctx.db_path}?mode=ro", uri=True)
    n = c.execute("SELECT count(*) FROM evaluation").fetchone()[0]
    c.close()
    return None if n == 1 else f"expected the good cell stored (1 evaluation), found {n}"


def laughs(ctx: Ctx) -> list[str]:
    """32 KB of YAML whose anchors expand to 10**30 list items, used where a dataset body is expected."""
    anchors = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 30):
        anchors.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    text = "version: [" + ", ".join(anchors) + "]\ndatasets:\n  bomb: *a29\n"
    return ["validate", "--registry", write_file(ctx, "laughs.yaml", text)]


def hold_lock(ctx: Ctx):
    """Open a write transaction on the database from another connection (released at exit)."""
    c = sqlite3.connect(ctx.db_path, isolation_level=None, timeout=1)
    c.execute("BEGIN IMMEDIATE")
    c.execute("UPDATE run SET host = 'locker'")
    return c


def malformed_row(ctx: Ctx) -> list[str]:
    c = sqlite3.connect(ctx.db_path)
    c.execute(
        "INSERT INTO evaluation (run_id, attack, attack_hash, attack_config_json, eps, n, n_clean_correct, "
        "n_robust_correct, clean_acc, robust_acc, eot, seconds, created_at) "
        "VALUES (1, 'pgd', 'h', '{not json', 0.1, 1, 1, 0, 1.0, 0.0, 1, 0.1, '2026-01-01 00:00:00')"
    )
    c.execute("INSERT INTO sample_outcome (evaluation_id, n, clean_bits, adv_bits) VALUES (1, 1, x'80', x'00')")
    c.commit()
    c.close()
    return ["report", "--db", ctx.db, "--out", str(ctx.root / "site")]


def formula_db(ctx: Ctx) -> list[str]:
    c = sqlite3.connect(ctx.db_path)
    c.execute("UPDATE run SET defense = '=HYPERLINK(\"http://x\")', git_sha = '@SUM(A1)'")
    c.execute(
        "INSERT INTO evaluation (run_id, attack, attack_hash, attack_config_json, eps, n, n_clean_correct, "
        "n_robust_correct, clean_acc, robust_acc, eot, seconds, created_at) "
        "VALUES (1, '+cmd|calc', '-h', '{}', 0.1, 1, 1, 0, 1.0, 0.0, 1, 0.1, '2026-01-01 00:00:00')"
    )
    c.commit()
    c.close()
    return ["export", "--db", ctx.db, "--out", str(ctx.root / "out.csv")]


def csv_safe(ctx: Ctx) -> str | None:
    import csv

    text = (ctx.root / "out.csv").read_text()
    cells = [v for row in csv.reader(io.StringIO(text)) for v in row]
    bad = [v for v in cells if v[:1] in ("=", "+", "-", "@")]
    return None if not bad else f"formula-leading cells written raw: {bad}"


def no_results_created(ctx: Ctx) -> str | None:
    return None


def disk_full_save(mp) -> None:
    import torch

    def full(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    mp.setattr(torch, "save", full)


def disk_full_db(mp) -> None:
    from sqlalchemy.exc import OperationalError

    from snnbench.store import Store

    def full(self, fn):
        raise OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))

    mp.setattr(Store, "_write", full)


def _under_file(ctx: Ctx, name: str) -> str:
    f = ctx.root / "in" / "a_file"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("x")
    return str(f / name)


def _check_args(ctx: Ctx, *extra: str) -> list[str]:
    return ["check", "--db", ctx.db, *extra]


G = np.random.default_rng(0)
U8 = lambda *s: G.integers(0, 256, s, dtype=np.uint8)  # noqa: E731
LAB = lambda n: np.arange(n) % 2  # noqa: E731

CASES: list[Case] = [
    # --- wrong numbers stored silently -------------------------------------------------------------------
    Case("if_unknown_test_class", "wrong",
         lambda c: c.run("--dataset", str(imagefolder(c, {"a": 4, "b": 4}, {"a": 2, "c": 2}))), fragment="c"),
    Case("steps_0", "wrong", lambda c: c.run("--steps", "0"), fragment="--steps"),
    Case("steps_neg", "wrong", lambda c: c.run("--steps", "-3"), fragment="--steps"),
    Case("alpha_0", "wrong", lambda c: c.run("--alpha", "0"), fragment="--alpha"),
    Case("suite_steps_neg", "wrong",
         lambda c: ["run", "--suite", "bad", "--results-dir", str(c.results), "--db", c.db, "--registry",
                    registry_with(c, lambda r: r["suites"].update({"bad": {
                        "dataset": "digits", "columns": [{"attack": "pgd", "steps": -1}],
                        "rows": [{"defense": "vanilla"}]}}))], fragment="steps"),
    ck_case("ck_nan", lambda sd: _with(sd, lambda t: t * float("nan")), "finite"),
    ck_case("ck_inf", lambda sd: _with(sd, lambda t: t + float("inf")), "finite"),
    ck_case("ck_int", lambda sd: _with(sd, lambda t: t.long()), "dtype"),
    ck_case("ck_bool", lambda sd: _with(sd, lambda t: t > 0), "dtype"),
    Case("npz_ambiguous_channels", "wrong",
         lambda c: c.run("--dataset", npz(c, U8(8, 8, 8, 4), LAB(8))), fragment="--channels"),
    Case("n_eval_0", "wrong", lambda c: c.run("--n-eval", "0"), fragment="--n-eval"),
    Case("n_eval_neg", "wrong", lambda c: c.run("--n-eval", "-1"), fragment="--n-eval"),
    Case("n_eval_huge", "wrong", lambda c: c.run("--n-eval", "1000000000", "--checkpoint", checkpoint(c, dict)),
         fragment="--n-eval"),
    Case("eps_minus_zero", "wrong", lambda c: c.run("--eps", "-0", "--checkpoint", checkpoint(c, dict)),
         expect="ok", post=one_eval_row, pre=lambda c: c.run("--eps", "0", "--checkpoint", checkpoint(c, dict))),
    # --- denial of service -----------------------------------------------------------------------------
    Case("yaml_billion_laughs", "dos", laughs),
    Case("registry_dev_zero", "dos", lambda c: ["validate"], env={"BENCH_REGISTRY": "/dev/zero"}),
    Case("ray_dead_address", "dos",
         lambda c: ["sweep", "--suite", "smoke", "--executor", "ray", "--address", "127.0.0.1:1",
                    "--results-dir", str(c.results), "--db", c.db], fragment="127.0.0.1:1", slow=True),
    Case("db_write_locked", "dos", lambda c: c.run("--checkpoint", checkpoint(c, dict)),
         env={"BENCH_LOCK_TIMEOUT": "3"}, fragment="lock"),
    # --- exit 2 but the database changed ---------------------------------------------------------------
    Case("training_diverges", "dbchange", lambda c: c.run("--lr", "1e30"), expect="failed", fragment="diverged"),
    Case("corrupt_partial_checkpoint", "dbchange", corrupt_partial, expect="ok", post=moved_aside),
    Case("tiny_images", "dbchange", lambda c: c.run("--dataset", npz(c, U8(32, 2, 2), LAB(32))), fragment="small"),
    Case("suite_failing_cell", "dbchange", failing_suite, expect="suite", post=suite_recorded, slow=True),
    # --- tracebacks where one line is promised ---------------------------------------------------------
    Case("npz_object_arrays", "traceback",
         lambda c: c.run("--dataset", npz(c, np.array([U8(8, 8), None], dtype=object), LAB(2)))),
    Case("npz_zero_samples", "traceback", lambda c: c.run("--dataset", npz(c, U8(0, 8, 8), LAB(0)))),
    Case("npz_not_a_zip", "traceback", lambda c: c.run("--dataset", write_file(c, "x.npz", "hello"))),
    Case("npz_1px", "traceback", lambda c: c.run("--dataset", npz(c, U8(32, 1, 1), LAB(32)))),
    Case("npz_3px", "traceback", lambda c: c.run("--dataset", npz(c, U8(32, 3, 3), LAB(32)))),
    Case("npz_4096px", "traceback",
         lambda c: c.run("--dataset", npz(c, np.zeros((2, 4096, 4096), np.uint8), LAB(2))), slow=True),
    Case("if_corrupt_png", "traceback", lambda c: c.run("--dataset", str(_if_corrupt(c)))),
    Case("if_empty_class", "traceback", lambda c: c.run("--dataset", str(_if_empty_class(c)))),
    Case("if_dangling_symlink", "traceback", lambda c: c.run("--dataset", str(_if_dangling(c)))),
    Case("if_decompression_bomb", "traceback", lambda c: c.run("--dataset", str(_if_bomb(c)))),
    Case("yaml_deep", "traceback",
         lambda c: ["validate", "--registry", write_file(c, "deep.yaml", "a: " + "[" * 20000 + "]" * 20000)]),
    Case("registry_not_utf8", "traceback",
         lambda c: ["validate", "--registry", write_file(c, "bad.yaml", b"datasets: {}\n# \xff\xfe\xfa\n")]),
    Case("baseline_not_utf8", "traceback",
         lambda c: _check_args(c, "--baseline", write_file(c, "b.json", b"{\"cells\": \xff}"))),
    Case("baseline_not_json", "traceback", lambda c: _check_args(c, "--baseline", write_file(c, "b.json", "[1, 2"))),
    ck_case("ck_state_dict_none", lambda sd: {"state_dict": None}),
    ck_case("ck_sparse", lambda sd: _with(sd, lambda t: t.to_sparse())),
    ck_case("ck_meta", lambda sd: _with(sd, lambda t: t.to("meta"))),
    Case("partial_without_optimizer", "traceback", partial_without_optimizer, expect="ok", post=moved_aside),
    Case("device_mps", "traceback", lambda c: c.run("--device", "mps"), fragment="--device"),
    Case("device_tpu", "traceback", lambda c: c.run("--device", "tpu"), fragment="--device"),
    Case("device_meta", "traceback", lambda c: c.run("--device", "meta"), fragment="--device"),
    Case("seed_20_digits", "traceback", lambda c: c.run("--seed", "12345678901234567890"), fragment="--seed"),
    Case("eot_1e9", "traceback", lambda c: c.run("--eot", "1000000000"), fragment="--eot"),
    Case("checkpoint_dir_readonly", "traceback", lambda c: c.run("--checkpoint-dir", "/proc")),
    Case("disk_full_checkpoint_save", "traceback", lambda c: c.run(), expect="failed", patch=disk_full_save,
         fragment="space"),
    Case("disk_full_db_write", "traceback", lambda c: c.run("--checkpoint", checkpoint(c, dict)),
         patch=disk_full_db, fragment="full"),
    Case("report_unwritable", "traceback",
         lambda c: ["report", "--db", c.db, "--out", _under_file(c, "site")]),
    Case("export_unwritable", "traceback",
         lambda c: ["export", "--db", c.db, "--out", _under_file(c, "x.csv")]),
    Case("check_update_unwritable", "traceback",
         lambda c: _check_args(c, "--update", "--baseline", _under_file(c, "b.json"))),
    Case("bench_json_unwritable", "traceback",
         lambda c: ["perf", "--device", "cpu", "--iters", "1", "--warmup", "0", "--json", _under_file(c, "b.json")]),
    Case("malformed_json_row", "traceback", malformed_row, expect="ok_or_error", post=lambda c: None),
    # --- read-only commands create nothing ---------------------------------------------------------------
    Case("export_creates_nothing", "readonly", lambda c: ["export"], fragment="bench.sqlite"),
    Case("report_creates_nothing", "readonly", lambda c: ["report", "--out", str(c.root / "in" / "site")],
         fragment="bench.sqlite"),
    Case("check_creates_nothing", "readonly", lambda c: ["check"], fragment="bench.sqlite"),
    Case("export_results_dir_unwritable", "readonly",
         lambda c: ["export", "--db", c.db, "--results-dir", _under_file(c, "results")], expect="ok",
         post=lambda c: None),
    # --- output folders are never deleted (issue 24 item 1) -----------------------------------------
    Case("report_out_is_db_folder", "dataloss", lambda c: ["report", "--db", c.db, "--out", str(c.root / "db")],
         fragment="--out"),
    Case("report_out_is_results_dir", "dataloss", lambda c: [
        "report", "--db", c.db, "--results-dir", str(_with_file(c, "results/checkpoints/m.pt").parent),
        "--out", str(c.results)], fragment="--out"),
    Case("report_out_cwd", "dataloss", lambda c: ["report", "--db", c.db, "--out", "."], fragment="--out"),
    Case("report_out_parent_of_db", "dataloss", lambda c: ["report", "--db", c.db, "--out", str(c.root)],
         fragment="--out"),
    Case("report_out_user_folder", "dataloss",
         lambda c: ["report", "--db", c.db, "--out", str(_with_file(c, "paper/main.tex"))], fragment="--out"),
    Case("report_out_user_folder_with_index", "dataloss",
         lambda c: ["report", "--db", c.db, "--out", str(_with_file(c, "web/index.html", "web/app.py"))],
         fragment="--out"),
    Case("report_out_is_a_file", "dataloss",
         lambda c: ["report", "--db", c.db, "--out", str(_with_file(c, "notes/notes.txt") / "notes.txt")]),
    Case("report_out_previous_site", "dataloss", lambda c: ["report", "--db", c.db, "--out", str(c.root / "s")],
         expect="ok", pre=lambda c: ["report", "--db", c.db, "--out", str(c.root / "s")],
         post=lambda c: None if (c.root / "s" / "index.html").is_file() else "site not rewritten"),
    Case("report_out_gitkeep_only", "dataloss",
         lambda c: ["report", "--db", c.db, "--out", str(_with_file(c, "site2/.gitkeep"))], expect="ok",
         post=lambda c: None if (c.root / "site2" / ".gitkeep").is_file()
         and (c.root / "site2" / "index.html").is_file() else ".gitkeep lost or no site"),
    # --- issue 24: silent parses, subnormal steps, huge weights ---------------------------------------
    Case("eps_underscore", "wrong", lambda c: c.run("--eps", "0_1"), fragment="--eps"),
    Case("alpha_subnormal", "wrong", lambda c: c.run("--alpha", "1e-320"), fragment="--alpha"),
    Case("alpha_below_min_step", "wrong", lambda c: c.run("--alpha", "1e-9"), fragment="--alpha"),
    Case("steps_underscore", "wrong", lambda c: c.run("--steps", "1_0"), fragment="--steps"),
    Case("lr_hex", "wrong", lambda c: c.run("--lr", "0x10"), fragment="--lr"),
    ck_case("ck_weights_3e38", lambda sd: {k: (v.clone().fill_(3e38) if v.is_floating_point() else v) for k, v in sd.items()},
            "outputs would overflow"),
    Case("sweep_num_cpus_nan", "traceback", lambda c: ["sweep", "--suite", "smoke", "--executor", "ray", "--num-cpus",
                                                        "nan", "--db", c.db], fragment="--num-cpus"),
    Case("sweep_num_cpus_zero", "dos", lambda c: ["sweep", "--suite", "smoke", "--executor", "ray", "--num-cpus", "0",
                                                   "--db", c.db], fragment="--num-cpus"),
    # --- issue 24: tampered rows are skipped with a visible count, never a traceback -------------------
    *[Case(f"tampered_{t}_{cmd[0].replace(' ', '_')}", "traceback", (lambda c, cmd=cmd, sql=sql: _tamper(c, sql, cmd)),
           expect="ok", fragment="skipped 1 unreadable stored row")
      for t, sql in (("clean_acc_1_5", "UPDATE evaluation SET clean_acc=1.5"),
                     ("robust_over_n", "UPDATE evaluation SET n_robust_correct=50"),
                     ("robust_acc_text", "UPDATE evaluation SET robust_acc='abc'"),
                     ("eps_1e308", "UPDATE evaluation SET eps=1e308"),
                     ("created_at_yesterday", "UPDATE evaluation SET created_at='yesterday'"),
                     ("flag_value_text", "UPDATE flag SET value='high'"))
      for cmd in (["report"], ["export"])],
    *[Case(f"tampered_run_date_{cmd[0]}", "traceback", (lambda c, cmd=cmd: _tamper(c, "UPDATE run SET created_at='yesterday'", cmd)),
           expect="ok", fragment="skipped 1 unreadable stored row") for cmd in (["report"], ["export"], ["ls", "runs"])],
    # --- issue 24: FIFOs and folders that are not ours --------------------------------------------------
    Case("fifo_registry_validate", "dos", lambda c: ["validate", "--registry", _fifo(c, "reg.yaml")], fragment="FIFO"),
    Case("fifo_registry_run", "dos", lambda c: [*c.run(), "--registry", _fifo(c, "reg.yaml")], fragment="FIFO"),
    Case("fifo_dataset_npz", "dos", lambda c: c.run("--dataset", _fifo(c, "data.npz")), fragment="FIFO"),
    Case("fifo_checkpoint", "dos", lambda c: c.run("--checkpoint", _fifo(c, "ck.pt")), fragment="FIFO"),
    Case("rm_creates_no_folder", "minor", lambda c: ["rm", "--run", "1", "--yes", "--db", c.db], expect="ok",
         post=lambda c: "created ./results/checkpoints" if (c.root / "results" / "checkpoints").exists() else None),
    Case("rm_missing_db_creates_nothing", "minor",
         lambda c: ["rm", "--run", "1", "--yes", "--db", str(c.root / "nowhere" / "b.sqlite")], fragment="no results database"),
    # --- issue 24: minor ---------------------------------------------------------------------------------
    Case("csv_space_then_equals", "minor", lambda c: _tamper(c, "UPDATE run SET defense=' =1+1'", ["export", "--out", str(c.root / "x.csv")]),
         expect="ok", post=lambda c: None if "' =1+1" in (c.root / "x.csv").read_text() else "formula not neutralised"),
    Case("empty_registry_validates", "minor", lambda c: ["validate", "--registry", _text_file(c, "empty.yaml", "")],
         fragment="no datasets"),
    Case("duplicate_yaml_key", "minor", lambda c: ["validate", "--registry", _text_file(
        c, "dup.yaml", "datasets: {}\ndatasets: {}\n")], fragment="appears twice"),
    Case("db_in_memory", "minor", lambda c: [*c.run()[:-2], "--db", "sqlite://"], fragment="in-memory"),
    Case("click_usage_one_line", "minor", lambda c: ["run", "--no-such-flag"], fragment="--no-such-flag"),
    # --- minor -----------------------------------------------------------------------------------------
    Case("alpha_negative_named", "minor", lambda c: c.run("--alpha", "-0.1"), fragment="--alpha"),
    Case("check_k_nan", "minor", lambda c: _check_args(c, "--k", "nan"), fragment="--k"),
    Case("check_floor_negative", "minor", lambda c: _check_args(c, "--floor", "-1"), fragment="--floor"),
    Case("csv_formula_cells", "minor", formula_db, expect="ok", post=csv_safe),
]


def _tamper(c: Ctx, sql: str, cmd: list[str]) -> list[str]:
    """Store one evaluation and flag, then damage them with ``sql`` (a hand-edited or corrupt database);
    ``cmd`` (a read-side command) is run on it."""
    from snnbench.store import EvalRecord, FlagRecord, Store

    store = Store(c.db)
    rid = store.runs()[0].id
    store.record_evaluation(rid, EvalRecord("pgd", "h" * 64, {"kind": "pgd", "norm": "linf", "bounded": True, "eps": 0.1},
                                            0.1, np.ones(10, bool), np.zeros(10, bool), 1.0, 1),
                            [FlagRecord("pgd", "zero_grad", True, 0.0, "ok")])
    store.engine.dispose()
    with sqlite3.connect(c.db_path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute(sql)
    out = ["--out", str(c.root / "site")] if cmd == ["report"] else []
    return [*cmd, "--db", c.db, *out]


def _fifo(c: Ctx, name: str) -> str:
    p = c.root / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(p)
    return str(p)


def _text_file(c: Ctx, name: str, text: str) -> str:
    p = c.root / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return str(p)


def _with_file(c: Ctx, *rel: str) -> Path:
    """Create the files ``rel`` (paths under the case directory) and return the first one's folder."""
    for r in rel:
        p = c.root / r
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("user data\n")
    return (c.root / rel[0]).parent


def _if_corrupt(c: Ctx) -> Path:
    root = imagefolder(c, {"a": 3, "b": 3}, {"a": 2, "b": 2})
    (root / "train" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return root


def _if_empty_class(c: Ctx) -> Path:
    root = imagefolder(c, {"a": 3, "b": 3}, {"a": 2, "b": 2})
    (root / "train" / "empty").mkdir()
    return root


def _if_dangling(c: Ctx) -> Path:
    root = imagefolder(c, {"a": 3, "b": 3}, {"a": 2, "b": 2})
    os.symlink(c.root / "nowhere.png", root / "train" / "a" / "gone.png")
    return root


def _if_bomb(c: Ctx) -> Path:
    root = imagefolder(c, {"a": 3, "b": 3}, {"a": 2, "b": 2})
    (root / "train" / "a" / "bomb.png").write_bytes(png_bomb(40000, 40000))
    return root


# --- verdicts -----------------------------------------------------------------------------------------------
def verdict(case: Case, ctx: Ctx, code: int | None, output: str, before_db: list[str], before_files: set[str],
            timed_out: bool = False) -> tuple[str, str]:
    """(category, detail): clean | traceback | hang | silent wrong result | DB changed | data lost | unclean."""
    if timed_out:
        return "hang", "timed out"
    if "Traceback" in output or code not in (0, 1, 2):
        return "traceback", output.strip().splitlines()[-1][:200] if output.strip() else f"exit {code}"
    # progress notes of a wait ("waiting for another process's write lock ...") are not error lines
    lines = [ln for ln in output.strip().splitlines() if ln.strip() and not ln.startswith("waiting for ")]
    if case.expect == "ok" and code != 0:  # a valid input refused
        return "unclean", f"exit {code}: " + " | ".join(lines)[:300]
    if case.expect in ("ok", "ok_or_error") and code == 0:
        if case.fragment and case.fragment not in output:  # e.g. a skipped row must be said
            return "silent wrong result", f"output lacks {case.fragment!r}"
        why = case.post(ctx) if case.post else None
        return ("clean", "") if why is None else ("silent wrong result", why)
    if case.expect == "ok_or_error" and code == 2 and len(lines) == 1:
        return "clean", lines[0]
    if code == 0:
        why = case.post(ctx) if case.post else "exit 0"
        return "silent wrong result", why or "exit 0"
    if case.expect == "suite":  # exit 2, a summary ending in one error line, the good cells stored
        if code != 2 or not lines or not lines[-1].startswith("error: "):
            return "unclean", f"exit {code}: " + " | ".join(lines)[-300:]
        why = case.post(ctx) if case.post else None
        return ("clean", lines[-1]) if why is None else ("silent wrong result", why)
    if case.expect == "failed":
        status = [s for h, s in run_status(ctx) if h != "e" * 64]
        if any(s == "running" for s in status) or not any(s == "failed" for s in status):
            return "DB changed", f"run status {status}"
        if case.post and (why := case.post(ctx)):
            return "unclean", why
    elif db_dump(ctx) != before_db:
        return "DB changed", "database content differs"
    if code != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or case.fragment not in lines[0]:
        return "unclean", f"exit {code}: " + " | ".join(lines)[:300]
    lost = before_files - files_under(ctx.root)
    if lost:
        return "data lost", f"deleted {sorted(lost)[:5]}"
    stray = files_under(ctx.root) - before_files
    allowed = {"results/checkpoints", "db/bench.sqlite"}
    stray = {s for s in stray if not s.startswith("results/checkpoints/") and s not in allowed
             and not s.endswith(".lock") and ".corrupt" not in s}
    if stray:
        return "unclean", f"stray files {sorted(stray)}"
    return "clean", lines[0]


def prepare_case(case: Case, root: Path) -> tuple[Ctx, list[str]]:
    ctx = Ctx(root)
    init_db(ctx)
    argv = case.setup(ctx)
    return ctx, argv


def _probe(timeout: float, pattern: str) -> None:  # pragma: no cover - a measuring script, not a test
    import subprocess
    import tempfile
    import time

    counts: dict[str, int] = {}
    # BENCH_PROBE_PYTHONPATH: another checkout's code (an overlay importable as snnbench), for a before/after table
    code = os.environ.get("BENCH_PROBE_PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    env0 = {**os.environ, "PYTHONPATH": code, "OMP_NUM_THREADS": "1"}
    other = "BENCH_PROBE_PYTHONPATH" in os.environ
    for case in CASES:
        if pattern and not any(p and (p == case.id or p in case.id) for p in pattern.split(",")):
            continue
        if other and case.patch:  # patched in this process, which runs this checkout's code: not the probed one
            counts["not probed"] = counts.get("not probed", 0) + 1
            print(f"{case.id:<32} {case.bullet:<9} {'not probed':<20}    -    (in-process patch: this checkout's code only)")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            ctx, argv = prepare_case(case, Path(tmp))
            t0 = time.perf_counter()
            if case.pre:
                subprocess.run([sys.executable, "-m", "snnbench", *case.pre(ctx)], env=env0, cwd=tmp,
                               capture_output=True, timeout=timeout)
            before_db, before_files = db_dump(ctx), files_under(ctx.root)
            locker = hold_lock(ctx) if case.id == "db_write_locked" else None
            if case.patch:
                code, out, to = _inproc(case, argv, tmp)
            else:
                try:
                    r = subprocess.run([sys.executable, "-m", "snnbench", *argv], env={**env0, **case.env}, cwd=tmp,
                                       capture_output=True, text=True, timeout=timeout, preexec_fn=_limit_memory)
                    code, out, to = r.returncode, r.stdout + r.stderr, False
                except subprocess.TimeoutExpired as e:
                    code, out, to = None, str(e.stdout or b"") + str(e.stderr or b""), True
            if locker:
                locker.rollback()
                locker.close()
            cat, detail = verdict(case, ctx, code, out, before_db, before_files, to)
        counts[cat] = counts.get(cat, 0) + 1
        print(f"{case.id:<32} {case.bullet:<9} {cat:<20} {time.perf_counter() - t0:6.1f}s  {detail[:150]}", flush=True)
    print(f"tried {sum(counts.values())}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def _limit_memory() -> None:  # pragma: no cover - the probe's children: 8 GB of address space at most
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


def _inproc(case: Case, argv: list[str], cwd: str) -> tuple[int | None, str, bool]:  # pragma: no cover
    import traceback

    import pytest
    from click.testing import CliRunner

    from snnbench.cli import main

    mp = pytest.MonkeyPatch()
    try:
        case.patch(mp)
        old = os.getcwd()
        os.chdir(cwd)
        res = CliRunner().invoke(main, argv, env=case.env)
        os.chdir(old)
    finally:
        mp.undo()
    out = res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        out += "Traceback\n" + "".join(traceback.format_exception(res.exception))
    return res.exit_code, out, False


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("-k", default="")
    a = ap.parse_args()
    _probe(a.timeout, a.k)
