"""`bench report`: a static site whose ranking, intervals, provenance, downloads and links hold up in a real
headless browser, written atomically; `bench export` is sorted, deterministic and in one unit."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _plant import plant_eval, plant_flag, plant_run
from sqlalchemy import text

from snnbench import report as report_mod
from snnbench.errors import BenchError
from snnbench.export import evaluation_rows, suite_rows, write_rows
from snnbench.registry import load_registry
from snnbench.report import build_site, delta_class
from snnbench.report_data import Acc, attack_label, leaderboard, wilson
from snnbench.store import FlagRecord, Store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory):
    from _tiny_suite import tiny_suite_run

    return tiny_suite_run(tmp_path_factory)


@pytest.fixture(scope="session")
def site(tiny_suite, tmp_path_factory) -> Path:
    reg, _, store, _, _ = tiny_suite
    out = tmp_path_factory.mktemp("site") / "site"
    build_site(reg, store, out)
    return out


@pytest.fixture(scope="session")
def reg():
    return load_registry(kinds=None)


def planted(tmp_path: Path, budget: str = "smoke", more_iters_failed: bool = True) -> Store:
    """Four models on digits: two standard-protocol rows (at ``budget``) whose intervals overlap (vanilla
    50/120, tgo 55/120 with a failed masking flag unless ``more_iters_failed`` is False), one clearly below
    (rat, an external checkpoint, 10/120), and one (feel) with a high PGD number but no standard-protocol
    evaluation."""
    store = Store(f"sqlite:///{tmp_path / 'planted.sqlite'}")
    a = plant_run(store, "vanilla")
    plant_eval(store, a, "standard", 120, 110, 50, kind="standard", budget=budget)
    plant_eval(store, a, "pgd", 120, 110, 60, steps=7, alpha=0.025)
    b = plant_run(store, "tgo")
    plant_eval(store, b, "standard", 120, 100, 55, kind="standard", budget=budget)
    plant_flag(store, b, "more_iters", not more_iters_failed, "APGD-CE 20 -> 40 iterations lowers it by 12 points")
    plant_flag(store, b, "zero_grad", True)
    c = plant_run(store, "rat", external="cd" * 32, source="https://example.org/rat.pt")
    plant_eval(store, c, "standard", 120, 100, 10, kind="standard", budget=budget)
    d = plant_run(store, "feel")
    plant_eval(store, d, "pgd", 120, 110, 90, steps=7, alpha=0.025)
    return store


# --- numbers ------------------------------------------------------------------------------------------
def test_wilson_interval_matches_reference_values():
    # Brown, Cai & DasGupta (2001) / statsmodels proportion_confint(method="wilson")
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(120, 120)[1] == 1.0 and wilson(120, 120)[0] == pytest.approx(0.9690, abs=1e-4)
    a = Acc(50, 120)
    assert a.lo < a.value < a.hi and a.overlaps(Acc(55, 120)) and not a.overlaps(Acc(10, 120))


def test_attack_labels_carry_their_budget():
    assert (
        attack_label("pgd", {"kind": "pgd", "steps": 7, "alpha": 0.025, "eot": None})
        == "pgd (7 steps, α 0.025)"
    )
    assert (
        attack_label("autoattack", {"kind": "autoattack", "version": "rand", "eot": 1})
        == "autoattack (rand, EOT 1)"
    )
    assert attack_label("pgd_bptr", {"kind": "pgd", "steps": 7, "grad_mode": "bptr"}).endswith("BPTR)")
    assert "smoke budget" in attack_label(
        "standard", {"kind": "standard", "protocol": "v1", "budget": "smoke"}
    )


def test_delta_colors():
    assert delta_class(1.0, 100, 0.5) == "ok"
    assert delta_class(-12.0, 10000, 0.5) == "bad"
    assert delta_class(-6.0, 10000, 0.5) == "warn"
    assert delta_class(None, 100, None) == "none"


# --- ranking ------------------------------------------------------------------------------------------
def test_ranks_by_standard_protocol_only_with_overlaps_as_rank_ranges(tmp_path, reg):
    store = planted(tmp_path)
    tables, others = leaderboard(reg, store)
    (t,) = tables
    assert (t.dataset, t.norm, t.eps, t.budget) == ("digits", "linf", 0.1, "smoke")
    assert [r.defense for r in t.rows] == ["tgo", "vanilla", "rat"]
    assert [r.rank for r in t.rows] == ["1–2", "1–2", "3"]  # 55/120 and 50/120 overlap; 10/120 does not
    assert [r.tied_with_leader for r in t.rows] == [True, True, False]
    assert t.rows[0].unreliable and not t.rows[1].unreliable
    assert [s["name"] for s in t.rows[0].stages] == ["apgd-ce", "square"]
    # feel's 75% PGD number is not ranked: it was never evaluated with the standard protocol
    assert [o.defense for o in others] == ["feel"] and others[0].strongest.value == 0.75
    # a run with no evaluation (a transfer substitute) is not a model row at all
    plant_run(store, "vanilla", seed=43)
    assert [o.defense for o in leaderboard(reg, store)[1]] == ["feel"]


def test_a_failed_masking_check_unranks_the_row_and_shows_its_number_as_an_upper_bound(tmp_path, reg):
    """Issue 20 item 5: a row that fails a masking check is not ranked by its number (listed after the
    ranked rows, "unranked", robust shown as an upper bound, the check named: site, CSV/JSON, DataFrame);
    the smoke budget's own artefacts (more_iters, protocol_le_attacks) do not unrank."""
    from snnbench import dataframes

    store = planted(tmp_path)
    plant_flag(store, 1, "gradfree_gap", False, "Square broke 12 samples after every gradient stage")
    (t,), _ = leaderboard(reg, store)
    assert [r.defense for r in t.rows] == ["tgo", "rat", "vanilla"]  # tgo: more_iters only, still ranked
    assert [r.rank for r in t.rows] == ["1", "2", "unranked"]
    assert t.rows[2].blocking == ["gradfree_gap (run)"] and t.rows[2].robust_bound.startswith("≤ ")
    assert t.rows[0].ranked and t.rows[0].unreliable  # potentially unreliable, ranked: a budget artefact
    out = tmp_path / "site"
    build_site(reg, store, out)
    html = (out / "index.html").read_text()
    assert "unreliable, not ranked" in html and "upper bound: failed gradfree_gap (run)" in html
    rows = {r["defense"]: r for r in json.loads((out / "leaderboard.json").read_text())}
    assert rows["vanilla"]["rank"] == "not ranked: failed gradfree_gap (run)"
    assert rows["vanilla"]["robust_is_upper_bound"] is True and rows["vanilla"]["rank_best"] is None
    assert rows["tgo"]["robust_is_upper_bound"] is False
    lb = dataframes.leaderboard(db=store.url, registry=None)
    v = lb[lb.defense == "vanilla"].iloc[0]
    assert not v.ranked and v.unranked_by == "gradfree_gap (run)"


def test_site_says_when_two_models_intervals_overlap(tmp_path, reg):
    store = planted(tmp_path, budget="full", more_iters_failed=False)
    out = tmp_path / "site"
    build_site(reg, store, out)
    html = (out / "index.html").read_text()
    assert "<h2>digits · L∞ ε = 0.1 · standard protocol snn-standard-v1 (full budget)</h2>" in html
    assert "Statistically tied with #1: tgo (standard), vanilla (standard)" in html
    assert "95% intervals overlap the leader" in html
    assert html.count(">1–2</td>") == 2 and ">3</td>" in html
    assert re.search(
        r"45\.83</span> <span class=\"ci\"[^>]*>\[37\.2, 54\.7\]", html
    )  # value + Wilson interval
    assert "Not ranked yet: no standard-protocol evaluation" in html and 'id="ci"' not in html
    assert "Wang et al., ICLR 2026" in html and "https://arxiv.org/abs/2602.20548" in html  # tgo's paper
    assert "@inproceedings{tgo," in html  # BibTeX to copy
    assert "external ckpt" in html and "trained here" in html


def test_ci_budget_boards_stand_apart_and_explain_their_budget_flags(tmp_path, reg):
    """Issue 23 item 3: smoke-budget rows sit on their own board, named as CI models and not a ranking
    (run ids instead of ranks, no tie note); the budget's own flags are marked † and explained below the
    table instead of a "potentially unreliable" badge; a full-budget failed check still unranks."""
    store = planted(tmp_path)  # smoke budget; tgo has a failed more_iters
    plant_flag(store, 3, "gradfree_gap", False, "Square broke 12 samples")  # rat: a real doubt
    out = tmp_path / "site"
    build_site(reg, store, out)
    html = (out / "index.html").read_text()
    ci = html[html.index('<section id="ci"'):html.index('id="unranked"')]
    assert "<h2>CI smoke budget (3-epoch models; not a ranking of defenses)</h2>" in ci
    assert "<h3>digits · L∞ ε = 0.1 · standard protocol snn-standard-v1 (smoke budget)</h3>" in ci
    assert "Statistically tied" not in html and ">1–2</td>" not in ci and '<th class="num sticky c1">run</th>' in ci
    tgo = ci[ci.index('href="run-2.html">tgo'):]
    tgo = tgo[:tgo.index("</tr>")]
    assert "potentially unreliable" not in tgo and "more_iters †" in tgo
    assert "Flags marked † are artefacts of the smoke budget, not a flaw of those defenses." in ci
    assert "unreliable, not ranked" in ci  # rat's gradfree_gap is no budget artefact
    assert html.index('id="ci"') > html.index('class="tabs"')


def test_unranked_models_show_the_command_that_ranks_them(tmp_path, reg):
    """A recipe run without the protocol: the ``bench run`` line that rebuilds its config (non-default
    epochs included, so the cached checkpoint is reused) with ``--attack standard``; a user's module:
    ``snnbench.evaluate(..., protocol="standard")``."""
    from snnbench.report_data import leaderboard_records
    from snnbench.store import RunInfo

    store = planted(tmp_path)
    cfg = {"dataset": {"name": "digits"}, "train": {"T": 4}, "format": 1,
           "external": {"module": "mypkg.MySNN", "weights_sha256": "ef" * 32}}
    ext = store.upsert_run(RunInfo("ext-1", cfg, "digits", "external", "my-snn", "external", 4, 0, device="cpu"))
    store.finish_run(ext, status="external")
    plant_eval(store, ext, "pgd", 120, 100, 40, steps=7, alpha=0.025)
    _, others = leaderboard(reg, store)
    cmds = {o.defense: o.rank_command for o in others}
    assert cmds["feel"] == "bench run --defense feel --training standard --epochs 3 --attack standard"
    assert cmds["my-snn"].startswith('snnbench.evaluate(model, protocol="standard")')
    out = tmp_path / "site"
    build_site(reg, store, out)
    html = (out / "index.html").read_text()
    codes = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<code>(.*?)</code>", html)]
    assert "bench run --defense feel --training standard --epochs 3 --attack standard" in codes
    assert {r["defense"] for r in leaderboard_records(*leaderboard(reg, store))} >= {"feel", "my-snn"}


def test_run_page_provenance_labels_and_flags_order(tmp_path, reg):
    store = planted(tmp_path)
    out = tmp_path / "site"
    build_site(reg, store, out)
    ext = (out / "run-3.html").read_text()
    assert "external checkpoint sha256 cdcdcdcdcdcd, declared source https://example.org/rat.pt" in ext
    assert "not trained here" in ext
    own = (out / "run-1.html").read_text()
    assert "trained here: 3 epochs, seed 42, 12.5 s" in own
    assert "pgd (7 steps, α 0.025)" in own and "standard protocol snn-standard-v1 (smoke budget)" in own
    tgo = (out / "run-2.html").read_text()
    assert tgo.index("FLAGGED") < tgo.index("1 checks passed")  # failed first, ok folded in <details>
    assert '<details class="okflags">' in tgo and "apgd-ce: 48.33%" in tgo


def test_run_page_shows_the_model_card_escaped_with_only_http_paper_links(tmp_path, reg):
    """A model evaluated through the API (bench/api.py) carries a ``model_card``: the run page shows it,
    escapes what the user wrote and turns the paper into a link only when it is an http(s) URL."""
    store = planted(tmp_path)
    card = {"name": "my-snn", "description": "2-layer <b>IF</b> SNN", "paper": "javascript:alert(1)",
            "randomized": True, "randomized_source": "detected", "module": "mypkg.nets.MySNN",
            "libraries": ["spikingjelly"], "attacker_controls": ["surrogate"], "weights_sha256": "ab" * 32}
    store.put_artifact(1, "model_card", "", card)
    store.put_artifact(2, "model_card", "", {**card, "paper": "https://arxiv.org/abs/2602.20548"})
    out = tmp_path / "site"
    build_site(reg, store, out)
    one = (out / "run-1.html").read_text()
    assert "2-layer &lt;b&gt;IF&lt;/b&gt; SNN" in one and "<b>IF</b>" not in one
    assert "mypkg.nets.MySNN" in one and "yes (detected)" in one and "spikingjelly" in one
    assert "<code>abababababababab</code>" in one
    assert "javascript:alert(1)" in one and 'href="javascript:' not in one
    two = (out / "run-2.html").read_text()
    assert '<a href="https://arxiv.org/abs/2602.20548" rel="noopener nofollow">' in two
    assert "model card" not in (out / "run-3.html").read_text()  # a recipe run has none


def test_not_run_suite_page_shows_command_and_projected_cost(site):
    html = (site / "suite-tiny.html").read_text()
    assert "bench sweep --suite tiny" not in html  # every runnable cell of the tiny suite is measured
    reg = load_registry(kinds=None)
    store = Store("sqlite://")
    out = site.parent / "empty"
    build_site(reg, store, out)
    page = (out / "suite-mpd_sgr_table1.html").read_text()
    assert '<code class="cmd">bench sweep --suite mpd_sgr_table1</code>' in page
    m = re.search(r"Projected cost: <strong>([\d.]+) GPU-hours</strong> \((\d+) models to train", page)
    assert m and float(m.group(1)) > 10 and int(m.group(2)) == 24  # 12 rows x {CIFAR-10, CIFAR-100}
    assert "perf/gpu_h200_bench_b256.json" in page
    assert (
        "Projected cost: unknown (no GPU rate measured for digits-sized inputs)"
        in (out / "suite-smoke.html").read_text()
    )


def test_the_rank_command_rebuilds_the_stored_models_config(registry, trained_vanilla):
    """The command shown for an unranked recipe run resolves to the run's own config hash (so ``bench run``
    loads its checkpoint instead of training another model): vanilla trained 8 epochs, not the default 15."""
    from snnbench.plan import RunRequest, resolve
    from snnbench.report_data import provenance, rank_command

    _, prep, store = trained_vanilla
    run = next(r for r in store.runs() if r.id == prep.run_id)
    cmd = rank_command(registry, run, provenance(run))
    assert cmd == "bench run --defense vanilla --training standard --epochs 8 --attack standard"
    flags = dict(zip(cmd.split()[2::2], cmd.split()[3::2], strict=True))
    req = RunRequest(defense=flags["--defense"], attacks=(flags["--attack"],),
                     train_overrides={"training": flags["--training"], "epochs": int(flags["--epochs"])})
    assert resolve(registry, req).config_hash == run.config_hash


# --- pages, links, downloads ----------------------------------------------------------------------------
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("href", "src"):
            if key in a and a[key]:
                self.links.append(a[key])


def test_pages_and_relative_links_resolve(site):
    pages = sorted(p.name for p in site.glob("*.html"))
    assert {"index.html", "suite-tiny.html", "run-1.html", "submit.html"} <= set(pages)
    for page in site.glob("*.html"):
        parser = _Links()
        parser.feed(page.read_text())
        for link in parser.links:
            if re.match(r"^https://(arxiv\.org|doi\.org|openreview\.net)/", link):
                continue  # paper links: the only external links
            assert not re.match(r"^[a-z]+://", link), (
                f"{page.name}: external link {link} (site must work offline)"
            )
            assert (site / link.split("#")[0]).is_file() or link.startswith("#"), (
                f"{page.name}: broken link {link}"
            )


def test_every_table_has_csv_and_json_downloads(site):
    for page in site.glob("*.html"):
        html = page.read_text()
        if "<table" not in html:
            continue
        files = re.findall(r'href="([^"]+\.(?:csv|json))" download', html)
        assert any(f.endswith(".csv") for f in files) and any(f.endswith(".json") for f in files), page.name
        for f in files:
            body = (site / f).read_text()
            if f.endswith(".json"):
                assert isinstance(json.loads(body), list)
            else:
                header = next(csv.reader(io.StringIO(body)))
                assert len(header) > 5
    rows = json.loads((site / "run-1.json").read_text())
    assert {"robust_ci_low", "robust_ci_high", "attack_label", "origin", "epochs"} <= set(rows[0])


def test_suite_page_shows_reported_beside_measured(site):
    html = (site / "suite-tiny.html").read_text()
    assert "test table 1" in html
    assert '<span class="rep">30.00</span>' in html  # reported PGD value
    assert re.search(r'class="meas" href="run-1.html">\d+\.\d\d</a>', html)
    assert re.search(r'<span class="ci">\[\d+\.\d, \d+\.\d\]</span>', html)  # interval in every measured cell
    assert re.search(r'<span class="delta (ok|warn|bad)">[+-]\d+\.\d</span>', html)
    assert "reported only" in html
    m = re.search(r"(\d+) rows × (\d+) columns = (\d+) cells", html)
    assert m and int(m.group(1)) * int(m.group(2)) == int(m.group(3)) and m.group(2) == "4"
    # autoescape: labels from YAML never become markup
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "<i>grp</i>" not in html and "&lt;i&gt;grp&lt;/i&gt;" in html
    assert html.count("<svg") >= 3  # eps sweep, steps sweep, membrane-potential histogram
    assert "near threshold" in html and "the share within 0.1 of the threshold" in html  # numbers explained


def test_export_sorted_deterministic_one_unit(tiny_suite):
    reg, suite, store, _, _ = tiny_suite
    rows = evaluation_rows(store)
    keys = [(r["dataset"], r["defense"], r["training"], r["attack"], r["eps"]) for r in rows]
    assert keys == sorted(keys) and len(rows) >= 4
    text_ = write_rows(rows, "csv")
    assert text_ == write_rows(evaluation_rows(store), "csv")
    back = list(csv.DictReader(io.StringIO(text_)))
    assert float(back[0]["robust_acc"]) == rows[0]["robust_acc"]
    assert float(back[0]["robust_ci_low"]) <= rows[0]["robust_acc"] <= float(back[0]["robust_ci_high"])
    assert back[0]["origin"] == "trained" and back[0]["epochs"] == "2"
    srows = suite_rows(reg, suite, store)
    assert [(r["row"], r["col"]) for r in srows] == sorted((r["row"], r["col"]) for r in srows)
    doc = json.loads(write_rows(srows, "json"))
    pgd = next(r for r in doc if r["attack"] == "pgd" and r["row"] == 0 and r["col"] == 2)
    assert pgd["reported_acc"] == 0.30  # one unit: the paper's 30.00 % as a fraction
    assert pgd["delta_acc"] == pytest.approx(pgd["measured_acc"] - 0.30, abs=1e-6)
    assert pgd["measured_ci_low"] <= pgd["measured_acc"] <= pgd["measured_ci_high"]


# --- robustness of the site ------------------------------------------------------------------------------
def test_tampered_rows_render_as_unreadable(tmp_path, reg):
    """Rows that fail the checks every stored row gets when read (issue 24: store.check_row) are skipped
    and named on the index with their count, never shown as numbers and never a traceback."""
    store = planted(tmp_path)
    with store.engine.begin() as c:
        c.execute(text("UPDATE run SET config_json = '{not json' WHERE id = 1"))
        c.execute(text("UPDATE evaluation SET attack_config_json = 'garbage' WHERE id = 2"))
        c.execute(text("UPDATE artifact SET json = '{' WHERE run_id = 2"))
        c.execute(text("UPDATE evaluation SET attack_config_json = '[1]' WHERE run_id = 4"))
    out = tmp_path / "site"
    build_site(reg, store, out)
    index = (out / "index.html").read_text()
    assert not (out / "run-1.html").exists() and (out / "run-2.html").is_file()
    assert "Skipped" in index and "run 1: config_json is not a JSON object" in index
    # run 1's evaluations are never read (their run is skipped); run 4's evaluation and run 2's artifact are
    assert "evaluation 5: attack_config_json is not a JSON object" in index and "artifact 2: its JSON does not parse" in index
    rows = evaluation_rows(store)
    assert rows and all(r["run_id"] != 1 and r["attack_config"] != "garbage" for r in rows)


def _snapshot(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_site_is_swapped_atomically_and_stale_pages_go(tmp_path, reg, monkeypatch):
    store = planted(tmp_path)
    out = tmp_path / "site"
    out.mkdir()
    (out / ".gitkeep").write_text("")
    build_site(reg, store, out)
    assert (out / "run-4.html").is_file() and (out / ".gitkeep").is_file()
    store.delete_runs([4])
    build_site(reg, store, out)
    assert not (out / "run-4.html").exists() and (out / "run-1.html").is_file()  # stale page removed
    before = _snapshot(out)

    def broken(reg_, store_, tmp):  # disk full half-way through rendering
        (tmp / "index.html").write_text("<html>partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_mod, "render_site", broken)
    with pytest.raises(BenchError, match=r"No space left on device\); the old site is unchanged"):
        build_site(reg, store, out)
    assert _snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site.build")]  # no temp dir left


@pytest.mark.slow
def test_kill_during_report_leaves_old_or_new_site(tmp_path, reg):
    """SIGKILL `bench report` at random moments: the site is always the old one or the new one, whole."""
    import yaml

    raw = yaml.safe_load(Path(reg.path).read_text())
    raw["suites"] = {k: v for k, v in raw["suites"].items() if k == "mpd_sgr_table3"}  # a fast render
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(raw))
    reg = load_registry(tmp_path / "registry.yaml", kinds=None)
    store = planted(tmp_path)
    build_site(reg, store, tmp_path / "old")
    old = _snapshot(tmp_path / "old")
    plant_eval(store, plant_run(store, "sr"), "standard", 120, 100, 30, kind="standard")
    t0 = time.perf_counter()
    build_site(reg, store, tmp_path / "new")
    render = time.perf_counter() - t0
    new = _snapshot(tmp_path / "new")
    assert old != new
    out = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "report",
        "--db",
        store.url,
        "--out",
        str(out),
        "--registry",
        reg.path,
    ]
    shutil.copytree(tmp_path / "old", out)
    subprocess.run(cmd, env=env, cwd=tmp_path, check=True, capture_output=True, timeout=300)
    assert _snapshot(out) == new
    rng = random.Random(0)
    outcomes = []
    for i in range(4):
        shutil.rmtree(out)
        shutil.copytree(tmp_path / "old", out)
        p = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill while it renders or swaps: once its temporary directory exists, after a random part of a render
        while p.poll() is None and not any(x.name.startswith(".site.build") for x in tmp_path.iterdir()):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 1.2) * render)
        p.send_signal(signal.SIGKILL)
        p.wait()
        snap = _snapshot(out)
        assert snap in (old, new), f"kill {i} after a random delay: a mixed site ({len(snap)} files)"
        outcomes.append("new" if snap == new else "old")
    assert "old" in outcomes, outcomes  # at least one kill landed before the swap
    subprocess.run(cmd, env=env, cwd=tmp_path, check=True, capture_output=True, timeout=300)
    assert _snapshot(out) == new
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site.build")], (
        "temp dirs of killed runs left"
    )


# --- headless browser -------------------------------------------------------------------------------------
def _chromium(args: list[str], profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--hide-scrollbars",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def browser_site(tiny_suite, tmp_path_factory) -> Path:
    """A copy of the tiny suite's database (run 1: a trained model with plots) plus the planted
    standard-protocol rows, rendered once."""
    import sqlite3

    treg, _, tstore, results, _ = tiny_suite
    base = tmp_path_factory.mktemp("browser")
    src = sqlite3.connect(results / "bench.sqlite")
    dst = sqlite3.connect(base / "planted.sqlite")
    src.backup(dst)
    src.close()
    dst.close()
    store = planted(base, budget="full", more_iters_failed=False)  # adds to the copy: runs 2-5 (a full board)
    for defense, robust in (("sr", 30), ("stog", 20)):  # a CI board with a budget artefact
        r = plant_run(store, defense)
        plant_eval(store, r, "standard_smoke", 120, 100, robust, kind="standard", budget="smoke")
    store.record_flags(r, [FlagRecord("standard_smoke", "protocol_le_attacks", False, 0.05, "weaker than apgd")])
    out = base / "site"
    build_site(treg, store, out)
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
@pytest.mark.parametrize("page", ["index.html", "suite-tiny.html", "run-1.html"])
@pytest.mark.parametrize("width", [1280, 390])
def test_site_renders_in_headless_chromium(browser_site, tmp_path, page, width):
    site = browser_site
    url = (site / page).as_uri()
    shot = site / f"screenshot-{page.replace('.html', '')}-{width}.png"
    r = _chromium([f"--screenshot={shot}", f"--window-size={width},1800", url], tmp_path / "profile")
    assert shot.is_file() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = _chromium(["--dump-dom", url], tmp_path / "profile2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [
        ln
        for ln in dom.stderr.splitlines()
        if "CONSOLE" in ln or "Uncaught" in ln or "Failed to load resource" in ln
    ]
    assert not console, console
    html = dom.stdout
    assert "<table" in html and "</html>" in html
    assert re.search(r"\[\d+\.\d, \d+\.\d\]", html), "no interval in the rendered DOM"
    parser = _Links()
    parser.feed(html)
    local = [
        x.split("#")[0] for x in parser.links if not re.match(r"^[a-z]+://", x) and not x.startswith("#")
    ]
    assert local and all((site / x).is_file() for x in local), [x for x in local if not (site / x).is_file()]
    downloads = [x for x in local if x.endswith((".csv", ".json"))]
    assert any(x.endswith(".csv") for x in downloads) and any(x.endswith(".json") for x in downloads)
    if page == "index.html":
        assert (
            "Statistically tied with #1" in html
            and 'href="run-1.html"' in html
            and 'href="submit.html"' in html
        )
    else:
        assert "<svg" in html and "<polyline" in html  # plots rendered into the DOM


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_ranked_columns_visible_at_390px(browser_site, tmp_path):
    """Measured in the browser: at 390 px the rank, defense and robust columns of the leaderboard are
    on screen without scrolling, and the table scrolls inside its box rather than widening the page."""
    harness = browser_site / "_measure.html"
    harness.write_text(
        '<!doctype html><iframe id="f" src="index.html" style="width:390px;height:800px;border:0"></iframe>'
        "<script>document.getElementById('f').onload=function(){var d=this.contentDocument;"
        "var th=d.querySelectorAll('table.board thead th');var out=[];for(var i=0;i<3;i++){out.push(Math.round(th[i].getBoundingClientRect().right));}"
        "document.body.setAttribute('data-right',out.join(','));"
        "document.body.setAttribute('data-page',d.documentElement.scrollWidth);};</script>"
    )
    dom = _chromium(
        ["--allow-file-access-from-files", "--virtual-time-budget=5000", "--dump-dom", harness.as_uri()],
        tmp_path / "p",
    )
    harness.unlink()
    m = re.search(r'data-right="([\d,]+)"', dom.stdout)
    assert m, dom.stdout[-500:] + dom.stderr[-1500:]
    rights = [int(x) for x in m.group(1).split(",")]
    assert max(rights) <= 390, rights
    page_width = int(re.search(r'data-page="(\d+)"', dom.stdout).group(1))
    assert page_width <= 392, page_width


def _in_frame(site: Path, tmp_path: Path, script: str, scripts: bool = True) -> str:
    """Load index.html in an iframe (its own scripts off with ``scripts=False``: a sandbox without
    allow-scripts), run ``script`` (JavaScript with ``d`` = its document) once it has loaded, and return
    the ``data-out`` attribute the script sets on the harness's body."""
    harness = site / "_harness.html"
    sandbox = "" if scripts else ' sandbox="allow-same-origin"'
    harness.write_text(
        f'<!doctype html><iframe id="f"{sandbox} src="index.html" style="width:1280px;height:800px;border:0"></iframe>'
        "<script>document.getElementById('f').onload=function(){var d=this.contentDocument;var out=[];"
        + script + "document.body.setAttribute('data-out',out.join('|'));};</script>"
    )
    dom = _chromium(["--allow-file-access-from-files", "--virtual-time-budget=5000", "--dump-dom", harness.as_uri()],
                    tmp_path / "p")
    harness.unlink()
    m = re.search(r'data-out="([^"]*)"', dom.stdout)
    assert m, dom.stdout[-500:] + dom.stderr[-1500:]
    return m.group(1)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_clicking_a_header_sorts_and_typing_filters_rows_in_chromium(browser_site, tmp_path):
    """Issue 23 item 3, in the browser: the inline script turns headers into sort buttons (text A-Z first,
    numbers high to low first, a second click reverses) and adds a filter box per table that hides the
    rows not containing every typed word."""
    names = ("function names(t){return Array.prototype.map.call(t.tBodies[0].rows,function(r){"
             "return r.cells[1].textContent.trim().split(/\\s+/)[0];}).join(',');}")
    out = _in_frame(browser_site, tmp_path, names + (
        "var t=d.querySelector('table.board');var b=t.tHead.rows[0].cells;out.push(names(t));"
        "b[1].querySelector('button.sort').click();out.push(names(t)+':'+b[1].getAttribute('aria-sort'));"
        "b[1].querySelector('button.sort').click();out.push(names(t)+':'+b[1].getAttribute('aria-sort'));"
        "b[2].querySelector('button.sort').click();out.push(names(t)+':'+b[2].getAttribute('aria-sort'));"
        "var box=t.parentNode.previousElementSibling.querySelector('input');box.value='VANILLA';"
        "box.dispatchEvent(new Event('input'));"
        "out.push(Array.prototype.filter.call(t.tBodies[0].rows,function(r){return !r.hidden;}).length+' '"
        "+box.nextSibling.textContent.trim());"
        "box.value='';box.dispatchEvent(new Event('input'));"
        "out.push(Array.prototype.filter.call(t.tBodies[0].rows,function(r){return r.offsetParent!==null;}).length);"
        "out.push(d.querySelectorAll('p.filter input').length+' '+d.querySelectorAll('table.sortable').length);"
    ))
    initial, by_name, reversed_, by_robust, filtered, cleared, boxes = out.split("|")
    assert initial == "tgo,vanilla,rat"  # the ranking: 55, 50, 10 of 120
    assert by_name == "rat,tgo,vanilla:ascending" and reversed_ == "vanilla,tgo,rat:descending"
    assert by_robust == "tgo,vanilla,rat:descending"
    assert filtered == "1 1 of 3 rows" and cleared == "3"
    n_boxes, n_tables = boxes.split()
    assert n_boxes == n_tables and int(n_tables) >= 3  # full board, CI board, not ranked yet


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_without_javascript_the_boards_are_plain_tables(browser_site, tmp_path):
    """Scripts off: no sort buttons, no filter boxes, every row shown; the HTML itself has no input element
    and loads no script from anywhere (the one script is inline)."""
    html = (browser_site / "index.html").read_text()
    static = re.sub(r"<script>.*?</script>", "", html, flags=re.S)
    assert "<input" not in static and "<button" not in static and "<script src" not in html
    out = _in_frame(browser_site, tmp_path, (
        "var rows=d.querySelectorAll('table.board tbody tr');"
        "out.push(rows.length);"
        "out.push(Array.prototype.filter.call(rows,function(r){return r.offsetParent!==null;}).length);"
        "out.push(d.querySelectorAll('button.sort, p.filter input').length);"
        "out.push(d.querySelector('.js-only').offsetParent===null);"
    ), scripts=False)
    n_rows, shown, controls, hint_hidden = out.split("|")
    assert int(n_rows) >= 6 and shown == n_rows and controls == "0"
    assert hint_hidden == "true"  # "click a column header to sort" is said only where it works


def test_swap_without_renameat2_still_replaces_the_site(tmp_path, monkeypatch):
    """Where RENAME_EXCHANGE is missing (macOS, some file systems) the site is swapped with two renames."""
    out, tmp = tmp_path / "site", tmp_path / ".site.build-1-x"
    out.mkdir()
    (out / "run-9.html").write_text("old")
    tmp.mkdir()
    (tmp / "index.html").write_text("new")
    monkeypatch.setattr(report_mod, "_exchange", lambda a, b: False)
    report_mod._swap_in(tmp, out)
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_a_smoke_budget_flag_does_not_mark_the_full_budget_row(tmp_path, reg):
    """One model evaluated at both budgets: the smoke protocol's own failed flag (weaker than a stored
    attack) marks the smoke row only; the full-budget row of the same run stays reliable."""
    from snnbench.store import FlagRecord

    store = Store(f"sqlite:///{tmp_path / 'budgets.sqlite'}")
    r = plant_run(store, "tgo")
    plant_eval(store, r, "standard_smoke", 120, 110, 42, kind="standard", budget="smoke")
    plant_eval(store, r, "standard", 120, 110, 35, kind="standard", budget="full")
    store.record_flags(r, [FlagRecord("standard_smoke", "protocol_le_attacks", False, 0.05, "weaker than apgd")])
    tables, _ = leaderboard(reg, store)
    rows = {t.budget: t.rows[0] for t in tables}
    assert rows["smoke"].unreliable and not rows["full"].unreliable
