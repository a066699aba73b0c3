"""Suites: the papers' tables validate and expand into cells; `bench run --suite` runs missing cells,
skips cached and unimplemented ones, and records the report's artifacts."""

from __future__ import annotations

import pytest
import yaml

from snnbench.errors import BenchError
from snnbench.kinds import python_kinds
from snnbench.registry import DEFAULT_PATH, load_registry

PAPER_SUITES = (
    "mpd_sgr_table1",
    "mpd_sgr_table2",
    "mpd_sgr_table3",
    "rat_table2",
    "feel_table1",
    "tgo_main",
    "tgo_ablation",
    "tgo_strong",
)


def _registry_with(tmp_path, suites: dict, extra_defenses: dict | None = None):
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["suites"] = suites
    raw["defenses"].update(extra_defenses or {})
    p = tmp_path / "registry.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_paper_suites_validate_with_reported_numbers(registry):
    for name in PAPER_SUITES:
        suite = registry.suites[name]
        reported = [c for c in suite.cells if c.reported is not None]
        assert reported, name
        assert all(c.source for c in reported), name
    t1 = registry.suites["mpd_sgr_table1"]
    cell = next(c for c in t1.cells if c.row_label == "MPD-SGR" and c.training == "at" and c.col == 6)
    assert (cell.dataset, cell.model, cell.T, cell.defense, cell.attack, cell.reported) == (
        "cifar100",
        "vgg11",
        8,
        "mpd_sgr",
        "pgd",
        22.23,
    )
    assert cell.source == "MPD-SGR Table 1"
    bptr = next(
        c
        for c in registry.suites["mpd_sgr_table2"].cells
        if c.row_label == "VGG11, BPTR, MPD-SGR" and c.attack == "pgd"
    )
    assert bptr.attack_overrides == {"grad_mode": "bptr_rga"}
    feel4 = next(c for c in registry.suites["feel_table4"].cells if c.attack == "pgd")
    assert feel4.attack_overrides["steps"] == 4 and abs(feel4.attack_overrides["eps"] - 4 / 255) < 1e-12
    composite = [c for c in registry.suites["feel_table1"].cells if c.row_label == "RAT+StoG+FEEL"]
    assert composite and not any(c.runnable for c in composite) and composite[0].reported == 69.97
    bb = next(c for c in registry.suites["rat_table2"].cells if c.row_label == "PGD(BPTR)*" and c.col == 0)
    assert (bb.attack, bb.attack_overrides, bb.defense, bb.training) == (
        "transfer",
        {"grad_mode": "bptr", "source": "pgd"},
        "rat",
        "at",
    )


def test_smoke_covers_every_defense_and_attack(registry):
    from snnbench.attacks import ATTACKS

    smoke = registry.suites["smoke"]
    kinds = {registry.attacks[a].kind for a in smoke.attacks if a != "clean"}
    for a in smoke.attacks:  # the standard protocol's stages run on every smoke model too
        entry = registry.attacks.get(a)
        cls = ATTACKS.get(entry.kind) if entry else None
        if cls is not None and cls.composite:
            kinds |= {st.kind for _, st in cls(cls.Params(**entry.params), 0.1, 0.025).stages()}
    missing = sorted({e.kind for e in registry.attacks.values()} - kinds)
    assert not missing, f"attack kinds missing from suites.smoke.columns in registry.yaml: {missing}"
    d_kinds = {registry.defenses[d].kind for d in smoke.defenses}
    missing = sorted({e.kind for e in registry.defenses.values()} - d_kinds)
    assert not missing, f"defense kinds missing from suites.smoke.rows in registry.yaml: {missing}"
    assert {c.dataset for c in smoke.cells} == {"digits"} and "at" in smoke.trainings


@pytest.mark.parametrize(
    "suite,needle",
    [
        (
            {"dataset": "digits", "attacks": ["pgd"], "defenses": ["vanila"]},
            "rows[0] x columns[0].defense: unknown defense 'vanila'; did you mean 'vanilla'",
        ),
        ({"dataset": "digits", "attacks": ["pgdd"], "defenses": ["vanilla"]}, "unknown attack 'pgdd'"),
        (
            {
                "dataset": "digits",
                "columns": ["pgd", "fgsm"],
                "rows": [{"defense": "vanilla", "reported": [1.0]}],
            },
            "rows[0].reported: expected a list of 2",
        ),
        (
            {
                "dataset": "digits",
                "columns": [{"attack": "pgd", "training": "at"}],
                "rows": [{"defense": "vanilla", "training": "standard"}],
            },
            "'training' is 'at' in columns[0] but 'standard' in rows[0]",
        ),
        (
            {
                "dataset": "digits",
                "columns": [{"attack": "pgd", "epsilon": 1}],
                "rows": [{"defense": "vanilla"}],
            },
            "columns[0]: unknown key 'epsilon'; did you mean 'eps'",
        ),
        (
            {"dataset": "digits", "columns": [{"attack": "pgd", "eps": 3}], "rows": [{"defense": "vanilla"}]},
            "eps: 3.0 is outside [0, 1]",
        ),
        (
            {
                "dataset": "digits",
                "columns": [{"attack": "pgd", "attack_params": {"stepz": 3}}],
                "rows": [{"defense": "vanilla"}],
            },
            "unknown key 'stepz'",
        ),
        ({"columns": ["pgd"], "rows": [{"defense": "vanilla"}]}, "no 'dataset'"),
        (
            {"dataset": "digits", "trainings": ["adv"], "attacks": ["pgd"], "defenses": ["vanilla"]},
            "trainings[0]: 'adv' is not a training mode",
        ),
        (
            {"dataset": "digits", "attacks": ["pgd"], "defenses": ["vanilla"], "sweeps": {"eps": [0, 2]}},
            "sweeps.eps[1]: 2 is outside [0, 1]",
        ),
        (
            {"dataset": "digits", "attacks": ["pgd"], "defenses": ["vanilla"], "sweeps": {"attack": "pgdd"}},
            "sweeps.attack: unknown attack 'pgdd'",
        ),
    ],
)
def test_suite_errors_name_the_yaml_path(tmp_path, suite, needle):
    p = _registry_with(tmp_path, {"bad": suite})
    with pytest.raises(BenchError) as e:
        load_registry(p, kinds=python_kinds())
    assert "suites.bad" in str(e.value) and needle in str(e.value)


def test_cross_product_suite_and_cell_keys(tmp_path):
    p = _registry_with(
        tmp_path,
        {
            "x": {
                "dataset": "digits",
                "defenses": ["vanilla"],
                "trainings": ["standard", "at"],
                "attacks": ["clean", "pgd"],
                "train": {"T": 2},
                "n_eval": 50,
            }
        },
    )
    suite = load_registry(p, kinds=python_kinds()).suites["x"]
    assert [(c.training, c.attack) for c in suite.cells] == [
        ("standard", "clean"),
        ("standard", "pgd"),
        ("at", "clean"),
        ("at", "pgd"),
    ]
    assert suite.cells[1].key == "digits/small_conv/T2/standard/vanilla/pgd/n=50"
    assert len({c.key for c in suite.cells}) == 4


def test_run_suite_runs_skips_and_resumes(tiny_suite):
    reg, suite, store, results, events = tiny_suite
    from snnbench.suites import run_suite

    status = {(e.cell.row_label, e.cell.col_label): e.status for e in events}
    assert status[("vanilla (standard)", "pgd")] == "ran"
    assert status[("vanilla (standard)", "clean")] == "ran"
    assert any(e.status == "skipped" and "reported only" in e.message for e in events)
    again = run_suite(reg, suite, store, results)
    assert {e.status for e in again if e.cell.defense == "vanilla"} == {"cached"}
    runs = store.runs()
    assert len(runs) == 1  # one model for every vanilla cell
    hist = store.artifacts(runs[0].id, "vpre_hist")["test"]
    assert hist["total"] == sum(hist["counts"]) + hist["below"] + hist["above"] > 0
    sweeps = store.artifacts(runs[0].id, "sweep")
    eps = sweeps["pgd:eps"]["points"]
    assert [p["x"] for p in eps] == [0.0, 0.1, 0.3]
    assert eps[0]["robust"] == eps[0]["clean"]  # eps = 0 changes nothing on a deterministic model
    assert eps[-1]["robust"] < eps[0]["robust"]


def test_measure_suite_reads_what_ran(tiny_suite):
    reg, suite, store, _, _ = tiny_suite
    from snnbench.suite_results import measure_suite

    by = {(m.cell.defense, m.cell.attack): m for m in measure_suite(reg, suite, store)}
    pgd, clean = by[("vanilla", "pgd")], by[("vanilla", "clean")]
    assert pgd.status == clean.status == "measured" and pgd.n == 360
    assert pgd.clean_acc == clean.clean_acc and pgd.robust_acc < clean.clean_acc
    assert by[(None, "pgd")].status == "reported only"


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory):
    from _tiny_suite import tiny_suite_run

    return tiny_suite_run(tmp_path_factory)
