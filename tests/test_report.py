"""`bench report` renders a static site whose tables, plots and links work in a real headless browser;
`bench export` is sorted and deterministic."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.export import evaluation_rows, suite_rows, write_rows
from bench.report import build_site, delta_class, leaderboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory):
    from _tiny_suite import tiny_suite_run

    return tiny_suite_run(tmp_path_factory)


@pytest.fixture(scope="session")
def site(tiny_suite, tmp_path_factory) -> Path:
    reg, _, store, _, _ = tiny_suite
    out = tmp_path_factory.mktemp("site")
    build_site(reg, store, out)
    return out


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
    assert {"index.html", "suite-tiny.html", "run-1.html"} <= set(pages)
    for page in site.glob("*.html"):
        parser = _Links()
        parser.feed(page.read_text())
        for link in parser.links:
            assert not re.match(r"^[a-z]+://", link), (
                f"{page.name}: external link {link} (site must work offline)"
            )
            assert (site / link.split("#")[0]).is_file(), f"{page.name}: broken link {link}"


def test_suite_page_shows_reported_beside_measured(site, tiny_suite):
    html = (site / "suite-tiny.html").read_text()
    assert "test table 1" in html
    assert '<span class="rep">30.00</span>' in html  # reported PGD value
    assert re.search(r'class="meas" href="run-1.html">\d+\.\d\d</a>', html)
    assert re.search(r'<span class="delta (ok|warn|bad)">[+-]\d+\.\d</span>', html)
    assert "reported only" in html
    # autoescape: labels from YAML never become markup
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "<i>grp</i>" not in html and "&lt;i&gt;grp&lt;/i&gt;" in html
    assert html.count("<svg") >= 3  # eps sweep, steps sweep, membrane-potential histogram


def test_leaderboard_ranks_by_per_sample_worst_case(tiny_suite):
    reg, _, store, _, _ = tiny_suite
    (row,) = leaderboard(reg, store)["digits"]
    per_attack = [e.robust_acc for e in store.evaluations(row.run_id) if e.attack in ("fgsm", "pgd")]
    assert (
        row.worst <= min(per_attack) and row.n_attacks >= 2
    )  # fgsm, pgd, pgd at eps 0.05 (<= the dataset's 0.1)
    assert row.clean is not None and row.clean >= row.worst


def test_delta_colors():
    assert delta_class(1.0, 100, 0.5) == "ok"
    assert delta_class(-12.0, 10000, 0.5) == "bad"
    assert delta_class(-6.0, 10000, 0.5) == "warn"
    assert delta_class(None, 100, None) == "none"


def test_export_sorted_and_deterministic(tiny_suite):
    reg, suite, store, _, _ = tiny_suite
    rows = evaluation_rows(store)
    keys = [(r["dataset"], r["defense"], r["training"], r["attack"], r["eps"]) for r in rows]
    assert keys == sorted(keys) and len(rows) >= 4
    text = write_rows(rows, "csv")
    assert text == write_rows(evaluation_rows(store), "csv")
    back = list(csv.DictReader(io.StringIO(text)))
    assert float(back[0]["robust_acc"]) == rows[0]["robust_acc"]
    srows = suite_rows(reg, suite, store)
    assert [(r["row"], r["col"]) for r in srows] == sorted((r["row"], r["col"]) for r in srows)
    doc = json.loads(write_rows(srows, "json"))
    pgd = next(r for r in doc if r["attack"] == "pgd" and r["row"] == 0 and r["col"] == 2)
    assert pgd["reported_percent"] == 30.0 and pgd["delta_points"] == pytest.approx(
        100 * pgd["measured_acc"] - 30.0, abs=1e-3
    )


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
@pytest.mark.parametrize("page", ["index.html", "suite-tiny.html", "run-1.html"])
def test_site_renders_in_headless_chromium(site, tmp_path, page):
    url = (site / page).as_uri()
    shot = site / f"screenshot-{page.replace('.html', '')}.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path / "profile")
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
    if page != "index.html":
        assert "<svg" in html and "<polyline" in html  # plots rendered into the DOM
    if page == "index.html":
        assert 'href="suite-tiny.html"' in html and 'href="run-1.html"' in html
