"""The shipped first stages and the demo that uses one: pinned by hash (a changed file is refused), loadable as VAEs, and
they keep the vessels of held-out images, which is why they are shipped. The shipped evaluators: pinned, and what a run
folder without evaluators gets, so every run is measured with the same validator and encoder."""

import shutil

import numpy as np
import pytest
import torch

import qhybrid.pretrained as pretrained
from qhybrid.data.loaders import load_dataset
from qhybrid.data.transforms import images_to_tensor, tensor_to_images
from qhybrid.evaluation.vessels import vessel_dice
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.vae import VAE

#: every shipped first stage: image size, latent shape and the held-out vessel-map Dice it must keep (32 test images)
SHIPPED = {"fundus-vae-64": (64, (4, 16, 16), 0.6), "fundus-vae-64-l32": (64, (4, 32, 32), 0.8),
           "fundus-vae-128-l32": (128, (4, 32, 32), 0.75)}
EVALUATORS = {"fundus-validator-64": "validator", "fundus-encoder-64": "feature-encoder"}


def test_every_shipped_checkpoint_is_listed_here_and_the_demo_uses_the_4x32x32_vae():
    from qhybrid.workflows.demo import DemoConfig

    assert set(SHIPPED) | set(EVALUATORS) == set(pretrained.PRETRAINED)
    assert DemoConfig().vae == "fundus-vae-64-l32"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_vae_matches_its_pinned_hash_and_loads(name):
    folder = pretrained.pretrained_checkpoint(name)
    assert ckpt.sha256_file(folder / ckpt.WEIGHTS_NAME) == pretrained.PRETRAINED[name].sha256
    vae = VAE.from_checkpoint(folder)
    assert (vae.cfg.size, vae.cfg.latent_shape) == SHIPPED[name][:2]
    assert (folder / ckpt.WEIGHTS_NAME).stat().st_size < 5 * 2**20


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_vae_keeps_the_vessels_of_held_out_images(name):
    vae = VAE.from_checkpoint(pretrained.pretrained_checkpoint(name)).eval()
    images = load_dataset("synthetic", SHIPPED[name][0], "test", n=32, seed=0).images
    with torch.no_grad():
        recon = tensor_to_images(vae(images_to_tensor(images), sample=False)[0])
    assert vessel_dice(images, recon).mean() >= SHIPPED[name][2]


def test_a_changed_shipped_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "fundus-vae-64"
    shutil.copytree(pretrained.FOLDER / "fundus-vae-64", copy)
    data = bytearray((copy / ckpt.WEIGHTS_NAME).read_bytes())
    data[-1] ^= 1
    (copy / ckpt.WEIGHTS_NAME).write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="does not match its pinned hash.*train it again with: qhybrid train vae"):
        pretrained.pretrained_checkpoint("fundus-vae-64")
    (copy / ckpt.WEIGHTS_NAME).unlink()
    with pytest.raises(ckpt.CheckpointError, match="is missing"):
        pretrained.pretrained_checkpoint("fundus-vae-64")
    with pytest.raises(ckpt.CheckpointError, match="available: fundus-vae-64"):
        pretrained.pretrained_checkpoint("fundus-vae-128")


def test_the_demo_copies_the_shipped_vae_into_the_run(tmp_path):
    from qhybrid.workflows.demo import _copy_shipped_vae

    assert _copy_shipped_vae("fundus-vae-64-l32", 64, tmp_path / "vae")
    assert not _copy_shipped_vae("fundus-vae-64-l32", 64, tmp_path / "vae")  # already there: nothing to do
    shipped = ckpt.read_header(pretrained.FOLDER / "fundus-vae-64-l32")
    assert ckpt.read_header(tmp_path / "vae")["weights_sha256"] == shipped["weights_sha256"]
    assert np.array_equal(np.sort([p.name for p in (tmp_path / "vae").iterdir()]),
                          np.sort([p.name for p in (pretrained.FOLDER / "fundus-vae-64-l32").iterdir()
                                   if p.name != "__pycache__"]))


def test_a_demo_run_made_with_the_earlier_shipped_vae_is_named_when_refused(tmp_path):
    """An earlier demo's folder (fundus-vae-64) resumed by today's demo (fundus-vae-64-l32): one
    line naming both and the fix, and the run is left as it was."""
    from qhybrid.errors import InputError
    from qhybrid.workflows.demo import _copy_shipped_vae

    _copy_shipped_vae("fundus-vae-64", 64, tmp_path / "vae")
    with pytest.raises(InputError, match=r"holds the shipped fundus-vae-64, not the shipped fundus-vae-64-l32 this "
                                         r"run asks for \(a run made with another first stage\); move that run aside"):
        _copy_shipped_vae("fundus-vae-64-l32", 64, tmp_path / "vae")
    assert ckpt.read_header(tmp_path / "vae")["weights_sha256"] == pretrained.PRETRAINED["fundus-vae-64"].sha256


def test_a_kept_denoiser_stage_must_predict_what_the_demo_trains(tmp_path):
    """make demo --resume keeps finished stages; one trained with another prediction type (an
    epsilon model from before the demo switched to v-prediction) is refused, not silently reported."""
    import torch

    from qhybrid.errors import InputError
    from qhybrid.training.diffusion import check_kept_prediction

    ckpt.save_checkpoint(tmp_path / "ldm-classical", "ldm", {"scheduler": {"prediction_type": "epsilon"}},
                         {"w": torch.zeros(1)})
    # the check the demo (and the sweep) makes before keeping a finished stage
    check_kept_prediction(tmp_path / "ldm-classical", "epsilon", "this demo", "move it aside")
    with pytest.raises(InputError, match="trained with epsilon prediction, this demo trains v_prediction; move it"):
        check_kept_prediction(tmp_path / "ldm-classical", "v_prediction", "this demo", "move it aside")


@pytest.mark.parametrize("name", sorted(EVALUATORS))
def test_a_shipped_evaluator_matches_its_pinned_hash_and_loads(name):
    from qhybrid.evaluation.features import FundusEncoder
    from qhybrid.evaluation.validator import GradabilityNet

    folder = pretrained.pretrained_checkpoint(name)
    assert ckpt.read_header(folder)["kind"] == EVALUATORS[name] == pretrained.PRETRAINED[name].kind
    cls = GradabilityNet if EVALUATORS[name] == "validator" else FundusEncoder
    assert cls.from_checkpoint(folder).cfg.size == 64
    assert (folder / ckpt.WEIGHTS_NAME).stat().st_size < 5 * 2**20


def test_a_run_folder_without_evaluators_gets_the_shipped_ones_and_they_judge_real_from_erased(tmp_path):
    from qhybrid.data.degrade import degrade
    from qhybrid.evaluation.validator import predict
    from qhybrid.workflows.compare import ensure_evaluators

    said = []
    encoder, validator, _, vdir, edir = ensure_evaluators(tmp_path, progress=False, log=said.append)
    for folder, name in ((vdir, "fundus-validator-64"), (edir, "fundus-encoder-64")):
        assert ckpt.read_header(folder)["weights_sha256"] == pretrained.PRETRAINED[name].sha256
        assert any(name in line and "hash checked" in line for line in said)
    assert not list(tmp_path.glob("*.partial"))
    # the ruler works: held-out retinas pass, the same ones with their vessels smoothed away do not
    images = load_dataset("synthetic", 64, "test", n=24, seed=0).images
    rng = np.random.default_rng(0)
    erased = np.stack([degrade(im, "smoothing", 0.8, rng) for im in images])
    threshold = validator.cfg.threshold
    assert np.mean(predict(validator, images) >= threshold) >= 0.9
    assert np.mean(predict(validator, erased) >= threshold) <= 0.1


def test_a_leftover_evaluator_folder_without_a_checkpoint_is_refused_in_one_line(tmp_path):
    from qhybrid.errors import InputError
    from qhybrid.workflows.compare import ensure_evaluators

    (tmp_path / "validator").mkdir()
    (tmp_path / "validator" / "partial.bin").write_bytes(b"x")
    with pytest.raises(InputError, match="validator exists but holds no checkpoint; move it aside, or give") as refused:
        ensure_evaluators(tmp_path, progress=False, log=lambda *_: None)
    assert "\n" not in str(refused.value)
    assert (tmp_path / "validator" / "partial.bin").exists()  # nothing of the user's was touched
