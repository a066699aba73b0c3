"""attacks/interior.py: APGD ending strictly inside the eps-ball. Its pixels never sit on an eps-ball
corner; on an honest network it is about as strong as APGD at eps; it breaks a corner-recognising model
(tests/_masked.py ``Corner``) that APGD at eps cannot."""

from __future__ import annotations

import pytest
import torch
from _masked import EPS, Corner, inner_mlp

import snnbench
from snnbench.adapters import ForeignModel
from snnbench.attacks.autoattack import APGD
from snnbench.attacks.interior import APGDInterior
from snnbench.errors import BenchError
from snnbench.protocol import binomial_tolerance

N = 80


@pytest.fixture(scope="module")
def data():
    x, y = snnbench.load_dataset("digits", "test")
    return x[:N], y[:N]


def _robust(model, attack, x, y) -> float:
    adv = attack.generate(model, x.clone(), y.clone())
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


def test_no_pixel_ends_on_a_corner_and_the_ball_is_respected(data):
    x, y = data
    model = ForeignModel(inner_mlp(), randomized=False)
    atk = APGDInterior(APGDInterior.Params(steps=20), EPS, 0.0)
    delta = (atk.generate(model, x.clone(), y.clone()) - x).abs()
    moved = delta > 1e-6
    assert moved.float().mean() > 0.3
    assert float(delta.max()) <= 0.95 * EPS + 1e-6  # strictly inside the ball
    assert not bool(((delta - EPS).abs() < 1e-4).any())  # no offset equals eps
    assert len(torch.unique((delta[moved] * 1e4).round())) > 50  # a continuum of offsets, not one radius


def test_on_an_honest_network_it_is_about_as_strong_as_apgd(data):
    x, y = data
    model = ForeignModel(inner_mlp(), randomized=False)
    full = _robust(model, APGD(APGD.Params(steps=20, loss="ce"), EPS, 0.0), x, y)
    inside = _robust(model, APGDInterior(APGDInterior.Params(steps=20), EPS, 0.0), x, y)
    assert full <= inside <= full + binomial_tolerance(full, N)


def test_it_breaks_a_corner_recognising_model_that_apgd_cannot(data):
    x, y = data
    inner = inner_mlp()
    model = ForeignModel(Corner(inner), randomized=False)
    at_eps = _robust(model, APGD(APGD.Params(steps=20, loss="ce"), EPS, 0.0), x, y)
    inside = _robust(model, APGDInterior(APGDInterior.Params(steps=20), EPS, 0.0), x, y)
    honest_inside = _robust(ForeignModel(inner, randomized=False), APGDInterior(APGDInterior.Params(steps=20), EPS, 0.0), x, y)
    assert inside <= honest_inside + binomial_tolerance(honest_inside, N)  # the corner trick no longer helps
    assert at_eps > inside + 0.2  # while APGD at eps is fooled by it


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(BenchError, match="radius must be in"):
        APGDInterior(APGDInterior.Params(radius=1.0), EPS, 0.0)
    with pytest.raises(BenchError, match="jitter must be in"):
        APGDInterior(APGDInterior.Params(jitter=0.0), EPS, 0.0)
