"""Submission bundles (issue 23 item 4): `bench export --submission` in one store, `bench submit --verify` into
another after re-running a seeded sample on the checkpoint; tampered bundles (an outcome flipped, a wrong
checkpoint hash, other weights) are refused with one line and nothing imported; external models only
--unverified, marked off the ranking."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from snnbench.cli import main
from snnbench.store import Store, pack, unpack
from snnbench.submission import CHECKPOINT, EVAL_BATCH_SIZE, MANIFEST, canonical_hash, sign_test_p

N = 24  # samples per evaluation: one batch, so every stage is re-run whole


@pytest.fixture(scope="module")
def source(registry, trained_vanilla, tmp_path_factory):
    """A store holding vanilla (the shared 8-epoch model) with fgsm, pgd, the smoke-budget protocol and the
    worst case on 24 samples (their own flags; the model checks are left out for time); the checkpoint
    directory (model and transfer substitutes) is shared."""
    from snnbench.pipeline import evaluate_plans
    from snnbench.plan import RunRequest, resolve

    _, prep, _ = trained_vanilla
    ck_dir = str(prep.checkpoint.parent)
    results = tmp_path_factory.mktemp("submission_source")
    store = Store(f"sqlite:///{results / 'bench.sqlite'}")
    req = RunRequest(defense="vanilla", attacks=("fgsm", "pgd", "standard_smoke", "worst"), n_eval=N,
                     train_overrides={"epochs": 8}, device="cpu", checkpoint_dir=ck_dir)
    out = evaluate_plans(registry, [resolve(registry, req)], store, results, eps_sweep=False, checks=False)
    return store, out.run_id, ck_dir, out.checkpoint


def bench(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def export(source, out: Path, *extra: str) -> Path:
    store, run_id, _, _ = source
    r = bench("export", "--db", store.url, "--submission", out, "--run", run_id, *extra)
    assert r.exit_code == 0, r.output
    return out


def submit(source, bundle: Path, db: Path, *extra: str):
    _, _, ck_dir, _ = source
    return bench("submit", "--verify", bundle, "--db", f"sqlite:///{db}", "--results-dir", db.parent / "results",
                 "--checkpoint-dir", ck_dir, "--seed", "3", "-q", *extra)


def rewrite(bundle: Path, out: Path, edit) -> Path:
    """A copy of ``bundle`` with ``edit(manifest)`` applied (what a tamperer would do)."""
    with zipfile.ZipFile(bundle) as z:
        m = json.loads(z.read(MANIFEST))
        ck = z.read(CHECKPOINT) if CHECKPOINT in z.namelist() else None
    edit(m)
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(MANIFEST, json.dumps(m))
        if ck is not None:
            z.writestr(CHECKPOINT, ck)
    return out


def flip(m: dict, attack: str, fix_counts: bool = True) -> int:
    """Turn the first sample ``attack`` broke into a robust one (counts and accuracy updated to match)."""
    e = next(x for x in m["evaluations"] if x["attack"] == attack)
    import base64

    clean, adv = unpack(base64.b64decode(e["clean_bits"]), e["n"]), unpack(base64.b64decode(e["adv_bits"]), e["n"])
    j = int(np.flatnonzero(clean & ~adv)[0])
    adv[j] = True
    e["adv_bits"] = base64.b64encode(pack(adv)).decode()
    if fix_counts:
        e["n_robust_correct"] += 1
        e["robust_acc"] = e["n_robust_correct"] / e["n"]
    return j


def one_line_refusal(r, *words: str) -> None:
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "nothing imported" in lines[0], r.output
    for w in words:
        assert w in lines[0], lines[0]


def test_bundle_from_one_store_is_verified_and_imported_into_another(source, tmp_path):
    store, run_id, _, _ = source
    bundle = export(source, tmp_path / "vanilla.zip", "--with-checkpoint")
    with zipfile.ZipFile(bundle) as z:
        assert sorted(z.namelist()) == sorted([MANIFEST, CHECKPOINT])
        m = json.loads(z.read(MANIFEST))
    assert m["format"] == "snnbench-submission" and m["checkpoint"]["sha256"] == store.runs()[0].checkpoint_sha256
    assert {"snnbench", "git_sha", "created"} <= set(m)
    db = tmp_path / "board" / "bench.sqlite"
    r = submit(source, bundle, db)
    assert r.exit_code == 0, r.output
    assert "verified re-ran 17 evaluations (2 more recomputed)" in r.output and " 0 of " in r.output
    target = Store(f"sqlite:///{db}")
    (src_run,), (dst_run,) = [x for x in store.runs() if x.id == run_id], target.runs()
    for k in ("config_hash", "config_json", "dataset", "model", "defense", "training", "T", "seed", "status",
              "checkpoint_sha256", "git_sha", "device"):
        assert getattr(dst_run, k) == getattr(src_run, k), k
    assert Path(dst_run.checkpoint_path).is_file()  # the bundle's checkpoint, kept content-addressed
    src, dst = store.evaluations(run_id), target.evaluations(dst_run.id)
    assert len(src) == len(dst) == 19
    for a, b in zip(src, dst, strict=True):
        for k in ("attack", "attack_hash", "attack_config_json", "eps", "n", "n_clean_correct", "n_robust_correct",
                  "clean_acc", "robust_acc", "eot", "seconds"):
            assert getattr(a, k) == getattr(b, k), (a.attack, k)
        for x, y in zip(store.sample_outcomes(a.id), target.sample_outcomes(b.id), strict=True):
            assert np.array_equal(x, y)
    key = lambda f: (f.scope, f.kind, f.attack_hash, f.ok, f.value, f.message)  # noqa: E731
    assert sorted(map(key, store.flags(run_id))) == sorted(
        key(f) for f in target.flags(dst_run.id) if f.kind != "submission_verified")
    assert target.artifacts(dst_run.id, "protocol") == store.artifacts(run_id, "protocol")
    sub = target.artifacts(dst_run.id, "submission")[""]
    assert sub["verified"] and sub["verification"]["seed"] == 3 and sub["verification"]["worse"] == 0


def test_import_is_idempotent_and_dry_run_imports_nothing(source, tmp_path):
    bundle = export(source, tmp_path / "pgd.zip", "--attack", "pgd")
    db = tmp_path / "bench.sqlite"
    r = submit(source, bundle, db, "--checkpoint", source[3], "--dry-run")
    assert r.exit_code == 0 and "dry run: nothing imported" in r.output and not db.exists(), r.output
    for _ in range(2):
        r = submit(source, bundle, db, "--checkpoint", source[3])
        assert r.exit_code == 0, r.output
    target = Store(f"sqlite:///{db}")
    assert [x.id for x in target.runs()] == [1] and [e.attack for e in target.evaluations(1)] == ["pgd"]
    assert target.counts()["sample_outcome"] == 1


def test_an_outcome_flipped_is_refused(source, tmp_path):
    bundle = export(source, tmp_path / "pgd.zip", "--attack", "pgd", "--with-checkpoint")
    db = tmp_path / "bench.sqlite"
    # counts left as they were: the bundle disagrees with itself
    r = submit(source, rewrite(bundle, tmp_path / "a.zip", lambda m: flip(m, "pgd", fix_counts=False)), db)
    one_line_refusal(r, "bundle refused", "disagree with its counts")
    # consistent counts: only the re-run finds it
    j = []
    r = submit(source, rewrite(bundle, tmp_path / "b.zip", lambda m: j.append(flip(m, "pgd"))), db)
    one_line_refusal(r, "1 of 48 re-run outcomes differ", f"sample {j[0]}: adversarial correct in the bundle, wrong re-run")
    assert not db.exists()


def test_on_another_kind_of_device_outcomes_are_compared_within_the_sign_test(source, tmp_path):
    """A bundle made on a GPU and verified on the CPU: a boundary sample may flip either way, so a few differing
    outcomes pass (named in the summary) and a one-sided excess (7 of 7: p = 1/128) is refused."""
    bundle = export(source, tmp_path / "pgd.zip", "--attack", "pgd", "--with-checkpoint")

    def gpu(m: dict, flips: int) -> None:
        m["run"]["device"] = "NVIDIA H100 80GB HBM3"
        for _ in range(flips):
            flip(m, "pgd")

    db = tmp_path / "bench.sqlite"
    r = submit(source, rewrite(bundle, tmp_path / "one.zip", lambda m: gpu(m, 1)), db, "--dry-run")
    assert r.exit_code == 0 and "1 of 48 outcomes differ (within the sign test: p=0.5)" in r.output, r.output
    r = submit(source, rewrite(bundle, tmp_path / "seven.zip", lambda m: gpu(m, 7)), db)
    one_line_refusal(r, "better than the re-run's beyond chance (7 better in the bundle, 0 worse of 48",
                     "made on NVIDIA H100 80GB HBM3, verified on cpu")
    assert not db.exists()


def test_transfer_substitutes_other_than_the_submitters_are_compared_within_the_sign_test(source, tmp_path):
    """The verifier attacks with its own substitutes; the bundle names the submitter's by sha256."""
    bundle = export(source, tmp_path / "p.zip", "--attack", "standard_smoke", "--with-checkpoint")
    with zipfile.ZipFile(bundle) as z:
        subs = json.loads(z.read(MANIFEST))["substitutes"]
    assert len(subs) == 2  # the protocol v2's transfer stage: a standard and an adversarially trained substitute

    def retrained(m: dict) -> None:
        m["substitutes"] = {h: "f" * 64 for h in m["substitutes"]}

    r = submit(source, rewrite(bundle, tmp_path / "r.zip", retrained), tmp_path / "b.sqlite", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "2 evaluations attack transfer substitutes other than the submitter's" in r.output  # stage + protocol row


def test_a_protocol_row_that_is_not_its_cascade_is_refused(source, tmp_path):
    bundle = export(source, tmp_path / "p.zip", "--attack", "standard_smoke", "--with-checkpoint")
    r = submit(source, rewrite(bundle, tmp_path / "t.zip", lambda m: flip(m, "standard_smoke")), tmp_path / "b.sqlite")
    one_line_refusal(r, "protocol 'standard_smoke': its robust outcomes differ from its last stage's")


def test_a_wrong_or_other_checkpoint_is_refused(source, tmp_path):
    _, _, ck_dir, ck = source
    bundle = export(source, tmp_path / "pgd.zip", "--attack", "pgd")
    db = tmp_path / "bench.sqlite"
    r = submit(source, bundle, db)  # exported without the checkpoint and none given
    assert r.exit_code == 2 and "holds no checkpoint" in r.output and "--checkpoint PATH" in r.output
    other = next(p for p in Path(ck_dir).glob("*.pt") if p != Path(ck))  # a transfer substitute: same architecture
    r = submit(source, bundle, db, "--checkpoint", other)
    one_line_refusal(r, "has sha256", "the bundle's results were made with")

    def lie(m: dict) -> None:  # the bundle claims the other weights
        from snnbench.train import sha256_file

        m["checkpoint"]["sha256"] = m["run"]["checkpoint_sha256"] = sha256_file(other)

    r = submit(source, rewrite(bundle, tmp_path / "lie.zip", lie), db, "--checkpoint", other)
    one_line_refusal(r, "re-run outcomes differ from the bundle's")

    def wrong_hash(m: dict) -> None:
        m["checkpoint"]["sha256"] = "0" * 64

    r = submit(source, rewrite(bundle, tmp_path / "h.zip", wrong_hash), db, "--checkpoint", ck)
    one_line_refusal(r, "the run row names another checkpoint sha256")
    assert not db.exists()


def test_external_model_is_refused_by_verify_and_imported_unverified(tmp_path):
    import torch
    from torch import nn

    import snnbench

    torch.manual_seed(0)
    src = tmp_path / "src.sqlite"
    snnbench.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), dataset="digits", attacks=["fgsm"], n=N,
                      db=src, name="linear", checks=False, progress=False, substitute=False)
    r = bench("export", "--db", f"sqlite:///{src}", "--submission", tmp_path / "ext.zip", "--run", "1")
    assert r.exit_code == 0 and "send the checkpoint" not in r.output, r.output
    db = tmp_path / "board.sqlite"
    r = bench("submit", "--verify", tmp_path / "ext.zip", "--db", f"sqlite:///{db}", "--results-dir", tmp_path / "r")
    one_line_refusal(r, "is an external model", "--unverified")
    assert not db.exists()
    r = bench("submit", "--unverified", tmp_path / "ext.zip", "--db", f"sqlite:///{db}", "--results-dir", tmp_path / "r")
    assert r.exit_code == 0 and "UNVERIFIED" in r.output, r.output
    target = Store(f"sqlite:///{db}")
    (run,) = target.runs()
    assert run.training == "external" and target.artifacts(run.id, "model_card")[""]["name"] == "linear"
    flag = next(f for f in target.flags(run.id) if f.kind == "unverified_submission")
    assert flag.scope == "run" and not flag.ok  # a failed run-scope check: off the ranking
    from snnbench.protocol import ranking_blockers

    assert ranking_blockers([f"{flag.kind} ({flag.scope})"], "standard", "full")


def test_bad_bundles_and_flags_are_one_line_errors(source, tmp_path):
    store, run_id, _, _ = source
    (tmp_path / "x.zip").write_text("not a zip")
    r = bench("submit", tmp_path / "x.zip", "--db", f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert r.exit_code == 2 and r.output.startswith("error: bundle") and "not a zip file" in r.output
    for args, msg in ((("--run", run_id), "go with --submission FILE"),
                      (("--submission", tmp_path / "a.zip"), "--submission needs --run ID"),
                      (("--submission", tmp_path / "a.zip", "--run", run_id, "--attack", "nope"),
                       "--attack nope: the run has no such evaluation"),
                      (("--submission", tmp_path / "a.zip", "--run", "99"), "--run 99: no such run")):
        r = bench("export", "--db", store.url, *args)
        assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "a.zip").exists()


def test_constants_agree_with_the_pipeline():
    from snnbench.plan import RunRequest
    from snnbench.plan import canonical_hash as plan_hash

    assert EVAL_BATCH_SIZE == RunRequest(defense="vanilla").eval_batch_size
    obj = {"b": [1, 2.5, (3, "x")], "a": {"z": None, "y": True}}
    assert canonical_hash(obj) == plan_hash(obj)
    assert sign_test_p(0, 5) == 1.0 and sign_test_p(7, 0) == 1 / 128 and abs(sign_test_p(3, 3) - 42 / 64) < 1e-12


def test_an_evaluation_comes_with_what_it_is_made_of(source, tmp_path):
    """--attack worst brings its sources (the protocol's stages with the protocol row); a stage brings its
    protocol."""
    store, run_id, _, _ = source
    r = bench("export", "--db", store.url, "--submission", tmp_path / "w.zip", "--run", run_id, "--attack", "worst")
    assert r.exit_code == 0 and "note: added standard_smoke: a source of the worst case worst" in r.output, r.output
    from snnbench.submission import read_bundle

    names = {e.name.split("/")[0] for e in read_bundle(tmp_path / "w.zip").evaluations}
    assert names == {"fgsm", "pgd", "standard_smoke", "worst"}
    bench("export", "--db", store.url, "--submission", tmp_path / "s.zip", "--run", run_id, "--attack",
          "standard_smoke/square")
    assert len(read_bundle(tmp_path / "s.zip").evaluations) == 16  # 15 stages and the protocol row


def test_copy_of_a_bundle_reads_back(source, tmp_path):
    """The bundle is plain JSON in a zip: the outcomes decode to the stored ones."""
    store, run_id, _, _ = source
    bundle = export(source, tmp_path / "b.zip", "--attack", "fgsm")
    shutil.copy(bundle, tmp_path / "copy.zip")
    from snnbench.submission import read_bundle

    b = read_bundle(tmp_path / "copy.zip")
    (e,) = b.evaluations
    ev = next(x for x in store.evaluations(run_id) if x.attack == "fgsm")
    c, a = store.sample_outcomes(ev.id)
    assert np.array_equal(e.clean, c) and np.array_equal(e.adv, a) and not b.has_checkpoint
