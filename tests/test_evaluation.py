"""The gradability validator, the fundus feature encoder, and the evaluate / score commands."""

import json

import numpy as np
import pytest
import torch
from cli_helpers import one_line_error, run
from PIL import Image

from qhybrid.data.degrade import DEGRADATIONS, degrade
from qhybrid.data.synthetic import SyntheticFundus
from qhybrid.errors import InputError
from qhybrid.evaluation.evaluate import evaluate_sets
from qhybrid.evaluation.features import FundusEncoder
from qhybrid.evaluation.validator import GradabilityNet, predict, roc_auc
from qhybrid.training.encoder import EncoderTrainConfig, train_encoder
from qhybrid.training.validator import ValidatorTrainConfig, train_validator


def trained(factory, name, train, cfg):
    """A session-wide evaluator checkpoint, trained once by ``train`` with ``cfg``."""
    out = factory.mktemp("eval") / name
    train(out, cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def validator_dir(tmp_path_factory):
    return trained(tmp_path_factory, "validator", train_validator, ValidatorTrainConfig(n=300, epochs=8))


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
    return trained(tmp_path_factory, "encoder", train_encoder, EncoderTrainConfig(n=240, epochs=6))


# Evaluators trained in seconds (the sizes of the quick demo): for the plumbing of scoring and
# evaluation; their accuracy is tested on the full-size ones.
@pytest.fixture(scope="session")
def quick_validator_dir(tmp_path_factory):
    return trained(tmp_path_factory, "quick-validator", train_validator, ValidatorTrainConfig(n=80, epochs=3))


@pytest.fixture(scope="session")
def quick_encoder_dir(tmp_path_factory):
    return trained(tmp_path_factory, "quick-encoder", train_encoder, EncoderTrainConfig(n=80, epochs=2))


def fresh_images(n=12, size=64, seed=777):
    return SyntheticFundus(size, seed=seed).sample(n)[0]


@pytest.mark.slow
def test_validator_is_accurate_on_held_out_synthetic_data(validator_dir):
    m = GradabilityNet.from_checkpoint(validator_dir).checkpoint_header["extra"]["metrics"]
    assert m["heldout_accuracy"] >= 0.9 and m["heldout_roc_auc"] >= 0.95
    assert set(m["per_degradation_accuracy"]) == set(DEGRADATIONS)
    assert (validator_dir / "heldout.png").exists()


@pytest.mark.slow
def test_validator_prefers_clean_images_to_each_kind_of_damage(validator_dir):
    model = GradabilityNet.from_checkpoint(validator_dir)
    clean = fresh_images()
    p_clean = predict(model, clean)
    assert np.mean(p_clean >= 0.5) >= 0.8
    rng = np.random.default_rng(0)
    for kind in DEGRADATIONS:
        if kind == "no_structure":
            continue
        bad = np.stack([degrade(img, kind, 0.9, rng) for img in clean])
        assert predict(model, bad).mean() < p_clean.mean() - 0.3, kind


def test_roc_auc_known_values():
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1])) == 1.0
    assert roc_auc(np.array([1, 0]), np.array([0.1, 0.9])) == 0.0
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5


@pytest.mark.slow
def test_encoder_learns_the_anatomy(encoder_dir):
    m = json.loads((encoder_dir / "config.json").read_text())["extra"]["metrics"]
    assert m["heldout_eye_accuracy"] >= 0.8
    assert m["heldout_disc_position_error"] < 0.15
    enc = FundusEncoder.from_checkpoint(encoder_dir)
    from qhybrid.evaluation.features import encode

    f = encode(enc, fresh_images(4))
    assert f.shape == (4, 64) and np.all(np.isfinite(f))


@pytest.mark.slow  # the quick evaluators take ~13 s to train: kept out of make test-fast
def test_evaluate_sets_and_inception_path(tmp_path, quick_validator_dir, quick_encoder_dir):
    real, fake = fresh_images(30, seed=1), fresh_images(30, seed=2)

    class Tiny(torch.nn.Module):  # stands in for a TorchScript Inception: same calling convention
        def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
            return x.float().mean(dim=(2, 3))

    path = tmp_path / "inception.pt"
    torch.jit.script(Tiny()).save(str(path))
    r = evaluate_sets(real, fake, encoder=FundusEncoder.from_checkpoint(quick_encoder_dir), validator=GradabilityNet.from_checkpoint(quick_validator_dir),
                      inception=str(path), k=3, n_boot=10)
    for group in ("fundus_features", "inception"):
        assert set(r[group]) == {"fd", "kid", "precision", "recall", "density", "coverage"}
    assert 0 <= r["gradable"]["value"] <= 1 and r["gradable"]["ci"][0] <= r["gradable"]["value"]
    with pytest.raises(InputError, match="not found"):
        evaluate_sets(real, fake, inception=str(tmp_path / "missing.pt"), k=3, n_boot=5)
    with pytest.raises(InputError, match="need more than 5"):
        evaluate_sets(real, fake[:4], k=5)


def write_pngs(folder, images, prefix="img"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{prefix}{i:03d}.png")
    return folder


@pytest.mark.slow  # the quick evaluators take ~13 s to train: kept out of make test-fast
def test_score_cli(tmp_path, quick_validator_dir):
    clean = fresh_images(3)
    rng = np.random.default_rng(1)
    blurred = [degrade(img, "defocus", 0.95, rng) for img in clean]
    folder = write_pngs(tmp_path / "imgs", list(clean) + blurred)
    proc = run("validator", "score", "--model", str(quick_validator_dir), str(folder), "--json")
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    assert len(scores) == 6 and {"image", "p_gradable", "gradable"} <= set(scores[0])
    assert np.mean([s["p_gradable"] for s in scores[:3]]) > np.mean([s["p_gradable"] for s in scores[3:]])
    proc = run("validator", "score", "--model", str(quick_validator_dir), str(folder / "img000.png"))
    assert proc.returncode == 0 and len(proc.stdout.strip().splitlines()) == 1
    assert "is not a validator checkpoint" in one_line_error(
        run("validator", "score", "--model", str(tmp_path / "imgs"), str(folder)))
    (tmp_path / "empty").mkdir()
    assert "contains no images" in one_line_error(run("validator", "score", "--model", str(quick_validator_dir), str(tmp_path / "empty")))


@pytest.mark.slow  # the quick evaluators take ~13 s to train: kept out of make test-fast
def test_evaluate_cli(tmp_path, quick_validator_dir, quick_encoder_dir):
    gen = fresh_images(24, seed=5)
    folder = write_pngs(tmp_path / "gen", gen)
    Image.fromarray(SyntheticFundus(48, seed=3)[0][0]).save(folder / "odd_size.png")
    out = tmp_path / "eval.json"
    proc = run("evaluate", "--real", "synthetic", "--generated", str(folder), "--n-real", "30", "--encoder",
               str(quick_encoder_dir), "--validator", str(quick_validator_dir), "--bootstrap", "10", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "resized 1 image(s)" in proc.stderr
    result = json.loads(out.read_text())
    assert result["n_generated"] == 25 and result["n_real"] == 30
    assert "fd" in result["fundus_features"] and "gradable" in result
    few = write_pngs(tmp_path / "few", gen[:3])
    assert "need more than 5" in one_line_error(run("evaluate", "--real", "synthetic", "--generated", str(few)))
    (tmp_path / "nothing").mkdir()
    assert "contains no images" in one_line_error(run("evaluate", "--real", "synthetic", "--generated", str(tmp_path / "nothing")))
    assert "expected a validator checkpoint" in one_line_error(
        run("evaluate", "--real", "synthetic", "--generated", str(folder), "--validator", str(quick_encoder_dir)))


@pytest.mark.slow  # the quick evaluators take ~13 s to train: kept out of make test-fast
def test_score_cli_reports_agreement_with_a_labelled_folder(tmp_path, quick_validator_dir):
    """A folder with a labels.csv quality column: the scores come with accuracy, AUC and the share
    accepted per labelled class; a file without a label is counted, not guessed."""
    clean = fresh_images(3)
    rng = np.random.default_rng(1)
    blurred = [degrade(img, "defocus", 0.95, rng) for img in clean]
    folder = write_pngs(tmp_path / "imgs", list(clean) + blurred)
    rows = ["file,quality"] + [f"img{i:03d}.png,Good" for i in range(3)] + [f"img{i:03d}.png,Reject" for i in (3, 4)]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    proc = run("validator", "score", "--model", str(quick_validator_dir), str(folder), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    a = result["agreement"]
    assert len(result["scores"]) == 6 and a["labelled"] == 5 and a["unlabelled"] == 1
    assert a["gradable"] == 3 and a["ungradable"] == 2
    accepted = [s["gradable"] for s in result["scores"]]
    assert a["accepted_gradable"] == pytest.approx(np.mean(accepted[:3]))
    assert a["accepted_ungradable"] == pytest.approx(np.mean(accepted[3:5]))
    truth = [True, True, True, False, False]
    assert a["accuracy"] == pytest.approx(np.mean([x == t for x, t in zip(accepted[:5], truth)]))
    # an explicit --labels without a quality column is refused in one line
    (tmp_path / "bad.csv").write_text("file,grade\nimg000.png,1\n")
    bad = run("validator", "score", "--model", str(quick_validator_dir), str(folder), "--labels", str(tmp_path / "bad.csv"))
    assert bad.returncode == 2 and "no usable quality labels" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
