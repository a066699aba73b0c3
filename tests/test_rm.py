"""`bench rm` deletes runs with everything stored with them, only after confirmation; the suite progress
line, `bench ls suites` counts and the papers section (issue 15 CLI items)."""

from __future__ import annotations

import pytest
import yaml
from _plant import plant_eval, plant_flag, plant_run
from click.testing import CliRunner

from snnbench.cli import main
from snnbench.errors import BenchError
from snnbench.registry import DEFAULT_PATH, load_registry
from snnbench.store import Store


@pytest.fixture()
def db(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'b.sqlite'}")
    for d in ("vanilla", "tgo", "tgo"):
        rid = plant_run(store, d, seed=len(store.runs()))
        plant_eval(store, rid, "standard", 60, 50, 20, kind="standard")
        plant_eval(store, rid, "pgd", 60, 50, 25, steps=7)
        plant_flag(store, rid, "zero_grad", True)
    return store


def rm(store: Store, *args: str, stdin: str | None = None):
    return CliRunner().invoke(main, ["rm", "--db", store.url, *args], input=stdin)


def test_refuses_without_confirmation_and_changes_nothing(db):
    before = db.counts()
    r = rm(db, "--defense", "tgo")  # CliRunner's stdin is not a terminal: no prompt, a refusal
    assert r.exit_code == 2 and "refusing to delete 2 runs without confirmation; rerun with --yes" in r.output
    assert "tgo" in r.output  # the runs it would delete are listed first
    assert db.counts() == before


def test_deletes_runs_by_defense_with_all_their_rows(db):
    r = rm(db, "--defense", "tgo", "--yes")
    assert r.exit_code == 0, r.output
    assert "deleted 2 runs (4 evaluations, 2 flags, 2 artifacts)" in r.output
    assert [x.defense for x in db.runs()] == ["vanilla"]
    assert db.counts() == {"run": 1, "evaluation": 2, "sample_outcome": 2, "flag": 1, "artifact": 1}


def test_deletes_by_id_and_rejects_unknown_ids(db):
    r = rm(db, "--run", "99", "--yes")
    assert r.exit_code == 2 and "--run 99: no such run" in r.output and "run ids: 1, 2, 3" in r.output
    r = rm(db, "--run", "1", "--yes")
    assert r.exit_code == 0 and [x.id for x in db.runs()] == [2, 3]


def test_bad_selections_are_one_line_errors(db):
    for args, msg in (
        ((), "give --run ID (repeatable) or --defense NAME"),
        (("--dataset", "digits"), "--dataset narrows --defense"),
        (("--defense", "nope", "--yes"), "no stored run matches (stored defenses: tgo, vanilla)"),
    ):
        r = rm(db, *args)
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
    assert db.counts()["run"] == 3


def test_ls_suites_counts_rows_columns_and_cells():
    r = CliRunner().invoke(main, ["ls", "suites"])
    line = next(x for x in r.output.splitlines() if x.startswith("smoke "))
    smoke = load_registry(kinds=None).suites["smoke"]
    r, c = len(smoke.row_labels), len(smoke.col_labels)
    assert f"{r} rows x {c} columns = {r * c} cells" in line and len(smoke.cells) == r * c


def test_suite_progress_line_counts_elapsed_eta_and_accuracy(tmp_path):
    from snnbench.cli_suite import SuiteProgress
    from snnbench.suites import CellEvent

    reg = load_registry(kinds=None)
    suite = reg.suites["smoke"]
    lines: list[str] = []
    p = SuiteProgress(reg, suite, Store(f"sqlite:///{tmp_path / 'e.sqlite'}"), echo=lines.append)
    p(CellEvent(cell=suite.cells[0], status="skipped", message="reported only"))
    p(CellEvent(cell=suite.cells[1], status="ran"))
    p(CellEvent(cell=suite.cells[2], status="cached"))
    n = len(suite.cells) - 1  # the skipped cell is summed up at the end, not counted
    assert lines[0].startswith(f"[1/{n}] elapsed 0:00:00, ETA ") and "vanilla (standard) x fgsm" in lines[0]
    assert lines[1].startswith(f"[2/{n}]") and lines[1].endswith("(cached)")
    assert "no stored result" in lines[0] and p.skipped["reported only"] == 1


def test_eps_sweep_flag_and_hidden_old_alias():
    r = CliRunner().invoke(main, ["run", "--help"])
    assert "--eps-sweep / --no-eps-sweep" in r.output and "--sweep / --no-sweep" not in r.output


def test_papers_are_data_and_references_are_checked(tmp_path):
    reg = load_registry(kinds=None)
    assert reg.defense_papers["mpd_sgr"] == "mpd_sgr" and reg.suites["rat_table2"].paper == "snn_rat"
    p = reg.papers["mpd_sgr"]
    assert p.link == "https://arxiv.org/abs/2511.12199" and p.short == "Jiang et al., AAAI 2026"
    assert "eprint = {2511.12199}" in p.to_bibtex() and "author = {Jiang, Runhao and" in p.to_bibtex()
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["defenses"]["rat"]["paper"] = "snn_ratt"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(BenchError, match=r"defenses\.rat\.paper.*snn_ratt.*snn_rat"):
        load_registry(tmp_path / "r.yaml", kinds=None)
    raw["defenses"]["rat"]["paper"] = "snn_rat"
    raw["papers"]["sr"]["arxiv"] = "not-an-id"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(BenchError, match=r"papers\.sr\.arxiv"):
        load_registry(tmp_path / "r.yaml", kinds=None)
