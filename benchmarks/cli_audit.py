"""CLI audit: every ``qhybrid`` subcommand run with bad input, checked against the CLI convention.

The convention (``qhybrid/cli/``): bad input exits 2, a runtime failure exits 1, each with
exactly one ``qhybrid: error: ...`` line on stderr that names the problem (and the fix), never a
traceback. This script builds the inputs it needs in a temporary folder (a tiny trained VAE and
hybrid/classical LDMs, a validator, a truncated ``model.safetensors``, a broken ``config.json``,
an empty folder, a text file posing as an image, a job record that is not JSON, ...), runs each
case as a real ``qhybrid`` process, writes ``docs/cli-audit.md`` (command | bad input | exit code |
what it printed) and exits 1 if any case breaks the convention.

    .venv/bin/python benchmarks/cli_audit.py            # about 5 minutes on 2 cores
    .venv/bin/python benchmarks/cli_audit.py --only sample --no-write

Each case is chosen to fail fast, before any training; where a command has to start, the sizes
are tiny. ``tests/test_cli_audit.py`` runs a subset of these cases.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
QHYBRID = str(Path(sys.executable).parent / "qhybrid")
# lines of a Python exception that leaked through instead of a message written for the user
RAW = ("Traceback", "Errno", "KeyError", "object has no attribute", "NoneType", "invalid literal",
       "index out of range", "unexpected keyword", "not subscriptable")


@dataclass
class Case:
    command: str          # the subcommand, e.g. "train diffusion"
    bad: str              # what is wrong with the input
    args: list            # full argument list after 'qhybrid'
    code: int = 2         # expected exit code (2 bad input, 1 runtime failure)
    expect: tuple = ()    # substrings the error line must contain (the problem, named)

    @property
    def id(self) -> str:
        return f"{self.command}: {self.bad}"


def make_inputs(root: Path, models: Path | None = None) -> SimpleNamespace:
    """Create the (bad) inputs in ``root``; ``models`` may hold tiny ``vae``, ``ldm-hybrid`` and
    ``ldm-classical`` checkpoints already (as the tests' ``tiny_models`` fixture), else they are trained."""
    import numpy as np
    from PIL import Image

    from qhybrid.models.vae import VAEConfig
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion
    from qhybrid.training.vae import VAETrainConfig, train_vae

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ready = root / ".inputs-ready"  # --keep: a second run reuses the folder
    if models is None:
        models = root / "models"
        if not ready.exists():
            train_vae(models / "vae", VAEConfig(size=32), VAETrainConfig(n=16, epochs=1, batch=8), progress=False)
            train_diffusion(models / "ldm-hybrid", models / "vae", "hybrid",
                            DiffusionTrainConfig(n=16, steps=10, batch=8), num_qubits=3, reps=1, progress=False)
            train_diffusion(models / "ldm-classical", models / "vae", "classical",
                            DiffusionTrainConfig(n=16, steps=5, batch=8), progress=False)
    p = SimpleNamespace(root=root, vae=models / "vae", hybrid=models / "ldm-hybrid",
                        classical=models / "ldm-classical", missing=root / "does-not-exist",
                        truncated=root / "truncated-ldm", truncated_vae=root / "truncated-vae",
                        broken=root / "broken-ldm", broken_vae=root / "broken-vae",
                        run_broken_vae=root / "run-broken-vae", empty=root / "empty", text=root / "notes.txt",
                        fake_png=root / "photo.png", bad_json=root / "broken.json", wide_spec=root / "wide-spec.json",
                        images=root / "images", jobs=root / "jobs", validator=root / "validator",
                        encoder=root / "encoder", truncated_validator=root / "truncated-validator")
    p.out = Path(tempfile.mkdtemp(prefix="out-", dir=root))  # fresh output folders: p.out / <case number>
    if ready.exists():
        return p
    # a truncated model.safetensors (an interrupted copy); the LDM still points at the good VAE
    for src, dst in ((p.hybrid, p.truncated), (p.vae, p.truncated_vae)):
        shutil.copytree(src, dst)
        weights = dst / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    # checkpoint folders whose config.json is not JSON
    for src, dst in ((p.hybrid, p.broken), (p.vae, p.broken_vae)):
        shutil.copytree(src, dst)
        (dst / "config.json").write_text('{"format": "qhybrid-checkpoint", "kind": ')
    shutil.copytree(p.broken_vae, p.run_broken_vae / "vae")  # a demo run folder whose VAE is damaged
    p.empty.mkdir()
    p.text.write_text("this is not an image\n")
    p.fake_png.write_text("this is not a PNG\n")  # a text file passed as an image
    p.bad_json.write_text('{"num_qubits": 3,')
    p.wide_spec.write_text('{"num_qubits": 12, "reps": 1}')  # a valid 12-qubit circuit for a 5-qubit backend
    p.images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p.images / f"img_{k}.png")
    p.jobs.mkdir()
    (p.jobs / "bad-record.json").write_text('{"format": "qhybrid-job-record", "run_id": ')
    from qhybrid.training.encoder import EncoderTrainConfig, train_encoder
    from qhybrid.training.validator import ValidatorTrainConfig, train_validator

    train_validator(p.validator, ValidatorTrainConfig(n=8, epochs=1), progress=False)
    train_encoder(p.encoder, EncoderTrainConfig(n=8, epochs=1), progress=False)
    shutil.copytree(p.validator, p.truncated_validator)
    weights = p.truncated_validator / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    ready.write_text("ok\n")
    return p


def cases(p: SimpleNamespace) -> list[Case]:
    out = iter(p.out / f"{k:03d}" for k in range(10_000))
    o = lambda: str(next(out))  # noqa: E731 - a fresh output folder for each case
    s = str
    tiny_vae = ["--size", "32", "--n", "16", "--epochs", "1", "--batch", "8"]
    tiny_ldm = ["--n", "16", "--steps", "2", "--batch", "8"]
    tiny_sample = ["--n", "2", "--steps", "2"]
    tiny_study = ["--ansatze", "real_amplitudes", "--qubits", "2", "--reps", "1", "--samples", "2", "--pairs", "2",
                  "--noise-inputs", "1", "--shots", "16", "--backends", "fake_manila"]
    return [
        # top level
        Case("(none)", "no command", []),
        Case("(none)", "unknown command", ["nope"], expect=("nope",)),
        Case("(none)", "--debug with no command (the traceback is --debug's job)", ["--debug"]),
        # demo
        Case("demo", "seed not a number", ["demo", "--seed", "abc"], expect=("abc",)),
        Case("demo", "--out is a file", ["demo", "--quick", "--out", s(p.text)], expect=(s(p.text),)),
        Case("demo", "--out below a file", ["demo", "--quick", "--out", s(p.text / "run")], code=1,
             expect=(s(p.text),)),
        Case("demo", "--out holds other files, no --resume", ["demo", "--quick", "--out", s(p.images)],
             expect=("--resume",)),
        Case("demo", "--resume on a run whose vae/ has a broken config.json",
             ["demo", "--quick", "--resume", "--out", s(p.run_broken_vae)], expect=("config.json",)),
        # data synth
        Case("data synth", "--n 0", ["data", "synth", "--out", o(), "--n", "0"], expect=("0",)),
        Case("data synth", "--n -3", ["data", "synth", "--out", o(), "--n", "-3"], expect=("-3",)),
        Case("data synth", "--size 0", ["data", "synth", "--out", o(), "--size", "0"]),
        Case("data synth", "--size 100000 (too large)", ["data", "synth", "--out", o(), "--size", "100000"],
             expect=("256",)),
        Case("data synth", "--grade 7 (grades are 0-4)", ["data", "synth", "--out", o(), "--n", "1", "--grade", "7"],
             expect=("7",)),
        Case("data synth", "--seed -1", ["data", "synth", "--out", o(), "--n", "1", "--seed", "-1"], expect=("-1",)),
        Case("data synth", "--grade -1", ["data", "synth", "--out", o(), "--n", "1", "--grade", "-1"],
             expect=("-1",)),
        Case("data synth", "--out is a file", ["data", "synth", "--out", s(p.text), "--n", "1", "--size", "32"],
             expect=(s(p.text),)),
        Case("data synth", "missing --out", ["data", "synth"], expect=("--out",)),
        # data show
        Case("data show", "missing source", ["data", "show", s(p.missing), "--out", o() + ".png"],
             expect=(s(p.missing),)),
        Case("data show", "empty folder", ["data", "show", s(p.empty), "--out", o() + ".png"], expect=(s(p.empty),)),
        Case("data show", "text file as the source", ["data", "show", s(p.text), "--out", o() + ".png"],
             expect=(s(p.text),)),
        Case("data show", "text file posing as a PNG", ["data", "show", s(p.fake_png), "--out", o() + ".png"],
             expect=(s(p.fake_png),)),
        Case("data show", "checkpoint folder as the source", ["data", "show", s(p.vae), "--out", o() + ".png"],
             expect=(s(p.vae),)),
        Case("data show", "--n 0", ["data", "show", "synthetic", "--out", o() + ".png", "--n", "0"]),
        Case("data show", "--size 100000", ["data", "show", "synthetic", "--out", o() + ".png", "--size", "100000"],
             expect=("100000",)),
        Case("data show", "--split nope", ["data", "show", "synthetic", "--out", o() + ".png", "--split", "nope"],
             expect=("nope",)),
        Case("data show", "--out is a folder", ["data", "show", "synthetic", "--n", "2", "--size", "32",
                                                "--out", s(p.empty)], expect=(s(p.empty),)),
        # train vae
        Case("train vae", "--data missing", ["train", "vae", *tiny_vae, "--data", s(p.missing), "--out", o()],
             expect=(s(p.missing),)),
        Case("train vae", "--data is a text file", ["train", "vae", *tiny_vae, "--data", s(p.text), "--out", o()],
             expect=(s(p.text),)),
        Case("train vae", "--data empty folder", ["train", "vae", *tiny_vae, "--data", s(p.empty), "--out", o()],
             expect=(s(p.empty),)),
        Case("train vae", "--size 48", ["train", "vae", "--size", "48", "--out", o()], expect=("48",)),
        Case("train vae", "--latent-size 24", ["train", "vae", "--size", "64", "--latent-size", "24", "--out", o()],
             expect=("--latent-size", "24")),
        Case("train vae", "--epochs 0", ["train", "vae", "--epochs", "0", "--out", o()]),
        Case("train vae", "--batch -1", ["train", "vae", "--batch", "-1", "--out", o()]),
        Case("train vae", "--seed -1", ["train", "vae", *tiny_vae, "--seed", "-1", "--out", o()], expect=("-1",)),
        Case("train vae", "--lr 0", ["train", "vae", *tiny_vae, "--lr", "0", "--out", o()], expect=("--lr",)),
        Case("train vae", "--lr -1", ["train", "vae", *tiny_vae, "--lr", "-1", "--out", o()], expect=("--lr",)),
        Case("train vae", "--quantum --qubits 0", ["train", "vae", "--quantum", "--qubits", "0", "--out", o()]),
        Case("train vae", "--quantum --qubits 70 (too many)", ["train", "vae", "--quantum", "--qubits", "70",
                                                               "--out", o()], expect=("70",)),
        Case("train vae", "--quantum --ansatz nope", ["train", "vae", "--quantum", "--ansatz", "nope", "--out", o()],
             expect=("nope",)),
        Case("train vae", "--placement without --quantum", ["train", "vae", "--placement", "bottleneck", "--out", o()],
             expect=("--quantum",)),
        Case("train vae", "--patch without --quantum", ["train", "vae", "--patch", "2", "--out", o()],
             expect=("--quantum",)),
        Case("train vae", "--quantum --patch 3 (does not divide the 16x16 middle)",
             ["train", "vae", "--quantum", "--patch", "3", "--out", o()], expect=("--patch", "3")),
        Case("train vae", "--out already holds a checkpoint", ["train", "vae", *tiny_vae, "--out", s(p.vae)],
             expect=("--resume",)),
        Case("train vae", "--out is a file", ["train", "vae", *tiny_vae, "--out", s(p.text)], expect=(s(p.text),)),
        Case("train vae", "--out below a file (fails at the first save, progress bar open)",
             ["train", "vae", *tiny_vae, "--out", s(p.text / "vae")], code=1, expect=(s(p.text / "vae"),)),
        Case("train vae", "--resume on an empty folder", ["train", "vae", *tiny_vae, "--resume", "--out", s(p.empty)],
             expect=("resume",)),
        Case("train vae", "--resume on a broken config.json",
             ["train", "vae", *tiny_vae, "--epochs", "5", "--resume", "--out", s(p.broken_vae)],
             expect=("config.json",)),
        # train diffusion
        Case("train diffusion", "--patch 3 on a 4x4 bottleneck", ["train", "diffusion", "--vae", s(p.vae), "--denoiser",
                                                                  "hybrid", "--patch", "3", "--out", o()],
             expect=("--patch 3", "bottleneck")),
        Case("train diffusion", "--vae missing", ["train", "diffusion", "--vae", s(p.missing), "--denoiser",
                                                  "classical", "--out", o()], expect=(s(p.missing),)),
        Case("train diffusion", "--vae is a file", ["train", "diffusion", "--vae", s(p.text), "--denoiser",
                                                    "classical", "--out", o()], expect=(s(p.text),)),
        Case("train diffusion", "--vae is an LDM checkpoint", ["train", "diffusion", "--vae", s(p.hybrid),
                                                               "--denoiser", "classical", "--out", o()],
             expect=("vae",)),
        Case("train diffusion", "--noise-aware on a classical denoiser",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "classical", "--noise-aware", "fake:fake_manila",
              "--out", o()], expect=("--denoiser hybrid",)),
        Case("train diffusion", "--noise-aware ibm:ibm_torino (not a fake target)",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "hybrid", "--noise-aware", "ibm:ibm_torino",
              "--out", o()], expect=("fake:",)),
        Case("train diffusion", "--noise-aware fake:fake_nope",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "hybrid", "--noise-aware", "fake:fake_nope",
              "--out", o()], expect=("fake_nope",)),
        Case("train diffusion", "--noise-consistency without --noise-aware",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "hybrid", "--noise-consistency", "2",
              "--out", o()], expect=("--noise-aware",)),
        Case("train diffusion", "--noise-consistency -1",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "hybrid", "--noise-aware", "fake:fake_manila",
              "--noise-consistency", "-1", "--out", o()], expect=("-1",)),
        Case("train diffusion", "--surrogate missing",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "hybrid", "--noise-aware", "fake:fake_manila",
              "--surrogate", s(p.missing), "--out", o()], expect=(s(p.missing),)),
        Case("train diffusion", "--surrogate is not a surrogate",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "hybrid", "--noise-aware", "fake:fake_manila",
              "--surrogate", s(p.bad_json), "--qubits", "3", "--reps", "1", "--n", "16", "--batch", "8",
              "--steps", "2", "--out", o()], expect=("surrogate",)),
        Case("train diffusion", "--init-from a classical LDM for a hybrid",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "hybrid", "--init-from", s(p.classical),
              "--n", "16", "--batch", "8", "--steps", "2", "--out", o()], expect=("--denoiser classical",)),
        Case("train diffusion", "--init-from missing",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "hybrid", "--init-from", s(p.missing),
              "--n", "16", "--batch", "8", "--steps", "2", "--out", o()], expect=(s(p.missing),)),
        Case("train diffusion", "--vae empty folder", ["train", "diffusion", "--vae", s(p.empty), "--denoiser",
                                                       "classical", "--out", o()], expect=(s(p.empty),)),
        Case("train diffusion", "--vae with truncated model.safetensors",
             ["train", "diffusion", "--vae", s(p.truncated_vae), "--denoiser", "classical", "--out", o()],
             expect=("model.safetensors",)),
        Case("train diffusion", "--vae with broken config.json",
             ["train", "diffusion", "--vae", s(p.broken_vae), "--denoiser", "classical", "--out", o()],
             expect=("config.json",)),
        Case("train diffusion", "--denoiser nope", ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "nope",
                                                    "--out", o()], expect=("nope",)),
        Case("train diffusion", "--steps 0", ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "classical",
                                              "--steps", "0", "--out", o()]),
        Case("train diffusion", "--batch 0", ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "classical",
                                              "--batch", "0", "--out", o()]),
        Case("train diffusion", "--lr -1", ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "classical",
                                            *tiny_ldm, "--lr", "-1", "--out", o()], expect=("--lr",)),
        Case("train diffusion", "--qubits 0", ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "hybrid",
                                               "--qubits", "0", "--out", o()]),
        Case("train diffusion", "--qubits 100 (too many)", ["train", "diffusion", "--vae", s(p.vae), "--denoiser",
                                                            "hybrid", *tiny_ldm, "--qubits", "100", "--out", o()],
             expect=("100",)),
        Case("train diffusion", "--ansatz nope", ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "hybrid",
                                                  *tiny_ldm, "--ansatz", "nope", "--out", o()], expect=("nope",)),
        Case("train diffusion", "--schedule nope", ["train", "diffusion", "--vae", s(p.vae), "--denoiser",
                                                    "classical", "--schedule", "nope", "--out", o()],
             expect=("nope",)),
        Case("train diffusion", "--prediction nope", ["train", "diffusion", "--vae", s(p.vae), "--denoiser",
                                                      "classical", "--prediction", "nope", "--out", o()],
             expect=("nope",)),
        Case("train diffusion", "--min-snr-gamma 0", ["train", "diffusion", "--vae", s(p.vae), "--denoiser",
                                                      "classical", "--min-snr-gamma", "0", "--out", o()],
             expect=("--min-snr-gamma",)),
        Case("train diffusion", "--attention-heads 5", ["train", "diffusion", "--vae", s(p.vae), "--denoiser",
                                                        "classical", "--attention-heads", "5", "--out", o()],
             expect=("--attention-heads", "5")),
        Case("train diffusion", "--precision fp64", ["train", "diffusion", "--vae", s(p.vae), "--denoiser",
                                                     "classical", "--precision", "fp64", "--out", o()],
             expect=("--precision", "fp64")),
        Case("train vae", "--precision half", ["train", "vae", "--precision", "half", "--out", o()],
             expect=("--precision", "half")),
        Case("train diffusion", "--data missing", ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "classical",
                                                   *tiny_ldm, "--data", s(p.missing), "--out", o()],
             expect=(s(p.missing),)),
        Case("train diffusion", "--out already holds a checkpoint",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "classical", *tiny_ldm, "--out", s(p.classical)],
             expect=("--resume",)),
        Case("train diffusion", "--resume on an empty folder",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "classical", *tiny_ldm, "--resume",
              "--out", s(p.empty)], expect=("resume",)),
        Case("train diffusion", "--resume with another --denoiser",
             ["train", "diffusion", "--vae", s(p.vae), "--denoiser", "classical", "--steps", "50", "--resume",
              "--out", s(p.hybrid)], expect=("--denoiser",)),
        # sample
        Case("sample", "--mitigation trex on ideal", ["sample", "--model", s(p.hybrid), *tiny_sample, "--mitigation",
                                                       "trex", "--out", o()], expect=("fake:",)),
        Case("sample", "--zne-extrapolator cubic", ["sample", "--model", s(p.hybrid), *tiny_sample, "--target",
                                                    "fake:fake_manila", "--mitigation", "zne", "--zne-extrapolator",
                                                    "cubic", "--out", o()], expect=("cubic",)),
        Case("sample", "--model missing", ["sample", "--model", s(p.missing), *tiny_sample, "--out", o()],
             expect=(s(p.missing),)),
        Case("sample", "--model is a file", ["sample", "--model", s(p.text), *tiny_sample, "--out", o()],
             expect=(s(p.text),)),
        Case("sample", "--model is a VAE", ["sample", "--model", s(p.vae), *tiny_sample, "--out", o()],
             expect=("ldm",)),
        Case("sample", "--model empty folder", ["sample", "--model", s(p.empty), *tiny_sample, "--out", o()],
             expect=(s(p.empty),)),
        Case("sample", "--model with truncated model.safetensors",
             ["sample", "--model", s(p.truncated), *tiny_sample, "--out", o()], expect=("model.safetensors",)),
        Case("sample", "--model with broken config.json", ["sample", "--model", s(p.broken), *tiny_sample,
                                                           "--out", o()], expect=("config.json",)),
        Case("sample", "--n 0", ["sample", "--model", s(p.hybrid), "--n", "0", "--out", o()]),
        Case("sample", "--steps 0", ["sample", "--model", s(p.hybrid), "--steps", "0", "--out", o()]),
        Case("sample", "--steps 100000 (more than the model's timesteps)",
             ["sample", "--model", s(p.hybrid), "--n", "2", "--steps", "100000", "--out", o()],
             expect=("100000",)),
        Case("sample", "--eta -1", ["sample", "--model", s(p.hybrid), *tiny_sample, "--eta", "-1", "--out", o()],
             expect=("--eta",)),
        Case("sample", "--eta 5", ["sample", "--model", s(p.hybrid), *tiny_sample, "--eta", "5", "--out", o()],
             expect=("--eta",)),
        Case("sample", "--seed abc", ["sample", "--model", s(p.hybrid), "--seed", "abc", "--out", o()],
             expect=("abc",)),
        Case("sample", "--sampler nope", ["sample", "--model", s(p.hybrid), "--sampler", "nope", "--out", o()],
             expect=("nope",)),
        Case("sample", "--target nope", ["sample", "--model", s(p.hybrid), *tiny_sample, "--target", "nope",
                                         "--out", o()], expect=("nope",)),
        Case("sample", "--target fake:nope", ["sample", "--model", s(p.hybrid), *tiny_sample, "--target",
                                              "fake:nope", "--out", o()], expect=("nope",)),
        Case("sample", "--target fake: on a classical model",
             ["sample", "--model", s(p.classical), *tiny_sample, "--target", "fake:fake_manila", "--out", o()],
             expect=("classical",)),
        Case("sample", "--shots 0", ["sample", "--model", s(p.hybrid), "--shots", "0", "--out", o()]),
        Case("sample", "--opt-level 7", ["sample", "--model", s(p.hybrid), "--opt-level", "7", "--out", o()]),
        Case("sample", "--noise-model without a fake: target",
             ["sample", "--model", s(p.hybrid), *tiny_sample, "--noise-model", s(p.bad_json), "--out", o()],
             expect=("fake:",)),
        Case("sample", "--noise-model is broken JSON",
             ["sample", "--model", s(p.hybrid), *tiny_sample, "--target", "fake:fake_manila", "--noise-model",
              s(p.bad_json), "--out", o()], expect=(s(p.bad_json.name),)),
        Case("sample", "--noise-model missing",
             ["sample", "--model", s(p.hybrid), *tiny_sample, "--target", "fake:fake_manila", "--noise-model",
              s(p.missing), "--out", o()], expect=(s(p.missing),)),
        Case("sample", "--out is a file", ["sample", "--model", s(p.hybrid), *tiny_sample, "--out", s(p.text)],
             expect=(s(p.text),)),
        Case("sample", "--out below a file (fails after sampling)", ["sample", "--model", s(p.hybrid), *tiny_sample,
                                                                     "--out", s(p.text / "samples")], code=1,
             expect=(s(p.text / "samples"),)),
        # validator train
        Case("validator train", "--n 0", ["validator", "train", "--out", o(), "--n", "0"]),
        Case("validator train", "--epochs -2", ["validator", "train", "--out", o(), "--epochs", "-2"]),
        Case("validator train", "--seed -1", ["validator", "train", "--out", o(), "--seed", "-1"], expect=("-1",)),
        Case("validator train", "--data missing", ["validator", "train", "--out", o(), "--data", s(p.missing)],
             expect=(s(p.missing),)),
        Case("validator train", "--data empty folder", ["validator", "train", "--out", o(), "--data", s(p.empty)],
             expect=(s(p.empty),)),
        Case("validator train", "--data is a text file", ["validator", "train", "--out", o(), "--data", s(p.text)],
             expect=(s(p.text),)),
        Case("validator train", "--out already holds a checkpoint", ["validator", "train", "--out", s(p.vae)],
             expect=(s(p.vae),)),
        # validator score
        Case("validator score", "--model missing", ["validator", "score", "--model", s(p.missing), s(p.images)],
             expect=(s(p.missing),)),
        Case("validator score", "--model is a VAE", ["validator", "score", "--model", s(p.vae), s(p.images)],
             expect=("validator",)),
        Case("validator score", "--model empty folder", ["validator", "score", "--model", s(p.empty), s(p.images)],
             expect=(s(p.empty),)),
        Case("validator score", "image missing", ["validator", "score", "--model", s(p.validator), s(p.missing)],
             expect=(s(p.missing),)),
        Case("validator score", "empty folder", ["validator", "score", "--model", s(p.validator), s(p.empty)],
             expect=(s(p.empty),)),
        Case("validator score", "text file as the image", ["validator", "score", "--model", s(p.validator),
                                                           s(p.fake_png)], expect=(s(p.fake_png),)),
        Case("validator score", "no images", ["validator", "score", "--model", s(p.validator)]),
        # encoder train
        Case("encoder train", "--n 0", ["encoder", "train", "--out", o(), "--n", "0"]),
        Case("encoder train", "--epochs 0", ["encoder", "train", "--out", o(), "--epochs", "0"]),
        Case("encoder train", "--out already holds a checkpoint", ["encoder", "train", "--out", s(p.vae)],
             expect=(s(p.vae),)),
        Case("encoder train", "--out is a file", ["encoder", "train", "--n", "4", "--epochs", "1", "--out", s(p.text)],
             expect=(s(p.text),)),
        # evaluate
        Case("evaluate", "--real missing", ["evaluate", "--real", s(p.missing), "--generated", s(p.images)],
             expect=(s(p.missing),)),
        Case("evaluate", "--generated missing", ["evaluate", "--real", "synthetic", "--generated", s(p.missing)],
             expect=(s(p.missing),)),
        Case("evaluate", "--generated empty folder", ["evaluate", "--real", "synthetic", "--generated", s(p.empty)],
             expect=(s(p.empty),)),
        Case("evaluate", "--generated is a text file", ["evaluate", "--real", "synthetic", "--generated",
                                                        s(p.fake_png)], expect=(s(p.fake_png),)),
        Case("evaluate", "--encoder is a VAE", ["evaluate", "--real", "synthetic", "--generated", s(p.images),
                                                "--n-real", "8", "--encoder", s(p.vae)], expect=("encoder",)),
        Case("evaluate", "--validator missing", ["evaluate", "--real", "synthetic", "--generated", s(p.images),
                                                 "--n-real", "8", "--validator", s(p.missing)],
             expect=(s(p.missing),)),
        Case("evaluate", "--validator with truncated model.safetensors",
             ["evaluate", "--real", "synthetic", "--generated", s(p.images), "--n-real", "8", "--validator",
              s(p.truncated_validator)], expect=("model.safetensors",)),
        Case("evaluate", "--inception missing", ["evaluate", "--real", "synthetic", "--generated", s(p.images),
                                                 "--n-real", "8", "--inception", s(p.missing)],
             expect=(s(p.missing),)),
        Case("evaluate", "--inception is a text file", ["evaluate", "--real", "synthetic", "--generated", s(p.images),
                                                        "--n-real", "8", "--inception", s(p.text)],
             expect=(s(p.text),)),
        Case("evaluate", "--k 0", ["evaluate", "--real", "synthetic", "--generated", s(p.images), "--k", "0"]),
        Case("evaluate", "--k 1000 (more than the images)", ["evaluate", "--real", "synthetic", "--generated",
                                                             s(p.images), "--n-real", "8", "--k", "1000"],
             expect=("1000",)),
        Case("evaluate", "--n-real 0", ["evaluate", "--real", "synthetic", "--generated", s(p.images),
                                        "--n-real", "0"]),
        Case("evaluate", "--size 100000", ["evaluate", "--real", "synthetic", "--generated", s(p.images),
                                           "--n-real", "8", "--size", "100000"], expect=("100000",)),
        Case("evaluate", "--bootstrap -1", ["evaluate", "--real", "synthetic", "--generated", s(p.images),
                                            "--bootstrap", "-1"]),
        Case("evaluate", "--split nope", ["evaluate", "--real", "synthetic", "--generated", s(p.images),
                                          "--split", "nope"], expect=("nope",)),
        Case("evaluate", "--json is a folder", ["evaluate", "--real", "synthetic", "--generated", s(p.images),
                                                "--n-real", "8", "--k", "2", "--bootstrap", "2", "--json",
                                                s(p.empty)], expect=(s(p.empty),)),
        # compare
        Case("compare", "run folder missing", ["compare", s(p.missing)], expect=(s(p.missing),)),
        Case("compare", "run folder is a file", ["compare", s(p.text)], expect=(s(p.text),)),
        Case("compare", "run folder empty", ["compare", s(p.empty)], expect=(s(p.empty),)),
        Case("compare", "run folder is a checkpoint", ["compare", s(p.hybrid)], expect=(s(p.hybrid),)),
        Case("compare", "--n 0", ["compare", s(p.vae.parent), "--n", "0"]),
        Case("compare", "--validator and --encoder are VAEs", ["compare", s(p.vae.parent), "--validator", s(p.vae),
                                                               "--encoder", s(p.vae)], expect=("validator",)),
        Case("compare", "--validator is a VAE (encoder trained otherwise)",
             ["compare", s(p.vae.parent), "--validator", s(p.vae)], expect=("validator",)),
        Case("compare", "--k 1000 (more than the samples)",
             ["compare", s(p.vae.parent), "--validator", s(p.validator), "--encoder", s(p.encoder), "--k", "1000",
              "--n", "4"], expect=("1000",)),
        Case("compare", "--train-sizes 0", ["compare", s(p.vae.parent), "--train-sizes", "0"], expect=("0",)),
        Case("compare", "--train-sizes abc", ["compare", s(p.vae.parent), "--train-sizes", "abc"],
             expect=("abc",)),
        Case("compare", "--kinds nope", ["compare", s(p.vae.parent), "--train-sizes", "64", "--kinds", "nope"],
             expect=("nope",)),
        Case("compare", "--train-sizes on a folder without vae/", ["compare", s(p.empty), "--train-sizes", "64"],
             expect=("vae",)),
        # backends, doctor
        Case("backends", "unexpected argument", ["backends", "extra"], expect=("extra",)),
        Case("doctor", "unknown option", ["doctor", "--bogus"], expect=("--bogus",)),
        # noise snapshot
        Case("noise snapshot", "unknown backend", ["noise", "snapshot", "fake_nope", "--out", o()],
             expect=("fake_nope",)),
        Case("noise snapshot", "no backend", ["noise", "snapshot"], expect=("backend",)),
        Case("noise snapshot", "--out is a file", ["noise", "snapshot", "fake_manila", "--out", s(p.text)],
             expect=(s(p.text),)),
        Case("noise surrogate", "--model classical LDM (no circuit)",
             ["noise", "surrogate", "--model", s(p.classical), "--backends", "fake_manila", "--out", o()],
             expect=("hybrid",)),
        Case("noise surrogate", "--backends ''", ["noise", "surrogate", "--model", s(p.hybrid), "--backends", "",
                                                 "--out", o()], expect=("--backends",)),
        Case("noise surrogate", "--backends fake_nope", ["noise", "surrogate", "--model", s(p.hybrid), "--backends",
                                                        "fake_nope", "--out", o()], expect=("fake_nope",)),
        Case("noise surrogate", "--shots 5", ["noise", "surrogate", "--model", s(p.hybrid), "--backends",
                                             "fake_manila", "--shots", "5"], expect=("5",)),
        # noise-aware study and comparison
        Case("noise-aware", "--vae missing", ["noise-aware", "--vae", s(p.missing), "--out", o()],
             expect=(s(p.missing),)),
        Case("noise-aware", "--unseen holds --backend", ["noise-aware", "--vae", s(p.vae), "--backend", "fake_manila",
                                                        "--unseen", "fake_manila", "--out", o()],
             expect=("unseen",)),
        Case("noise-aware", "--seeds 0,0", ["noise-aware", "--vae", s(p.vae), "--seeds", "0,0", "--out", o()],
             expect=("seeds",)),
        Case("noise-aware", "--backend fake_nope", ["noise-aware", "--vae", s(p.vae), "--backend", "fake_nope",
                                                   "--out", o()], expect=("fake_nope",)),
        Case("noisy-eval", "--plain without --noise-aware", ["noisy-eval", "--plain", s(p.hybrid), "--backends",
                                                              "fake_manila", "--out", o()], expect=("--noise-aware",)),
        Case("noisy-eval", "--plain with --model", ["noisy-eval", "--plain", s(p.hybrid), "--model", s(p.hybrid)],
             expect=("--model",)),
        Case("noisy-eval", "--plain with two --shots", ["noisy-eval", "--plain", s(p.hybrid), "--noise-aware",
                                                         s(p.hybrid), "--backends", "fake_manila", "--shots",
                                                         "1024,4096", "--out", o()], expect=("--shots",)),
        Case("noisy-eval", "--plain without --out", ["noisy-eval", "--plain", s(p.hybrid), "--noise-aware",
                                                      s(p.hybrid), "--backends", "fake_manila"], expect=("--out",)),
        Case("noisy-eval", "--plain with a classical model", ["noisy-eval", "--plain", s(p.classical), "--noise-aware",
                                                               s(p.hybrid), "--backends", "fake_manila", "--n", "2",
                                                               "--steps", "1", "--out", o()],
             expect=("hybrid",)),
        Case("noisy-eval", "--evaluators without --plain", ["noisy-eval", "--model", s(p.hybrid), "--backends",
                                                             "fake_manila", "--evaluators", s(p.empty)],
             expect=("--evaluators",)),
        # circuits inspect
        Case("circuits inspect", "--model missing", ["circuits", "inspect", "--model", s(p.missing), "--backend",
                                                     "fake_manila", "--out", o()], expect=(s(p.missing),)),
        Case("circuits inspect", "--model is a file", ["circuits", "inspect", "--model", s(p.text), "--backend",
                                                       "fake_manila", "--out", o()], expect=(s(p.text),)),
        Case("circuits inspect", "--model classical VAE (no circuit)",
             ["circuits", "inspect", "--model", s(p.vae), "--backend", "fake_manila", "--out", o()],
             expect=("quantum",)),
        Case("circuits inspect", "--model classical LDM (no circuit)",
             ["circuits", "inspect", "--model", s(p.classical), "--backend", "fake_manila", "--out", o()],
             expect=("quantum",)),
        Case("circuits inspect", "--model with broken config.json",
             ["circuits", "inspect", "--model", s(p.broken), "--backend", "fake_manila", "--out", o()],
             expect=("config.json",)),
        Case("circuits inspect", "--spec missing", ["circuits", "inspect", "--spec", s(p.missing), "--backend",
                                                    "fake_manila", "--out", o()], expect=(s(p.missing),)),
        Case("circuits inspect", "--spec is broken JSON", ["circuits", "inspect", "--spec", s(p.bad_json),
                                                           "--backend", "fake_manila", "--out", o()],
             expect=(s(p.bad_json),)),
        Case("circuits inspect", "--spec is a folder", ["circuits", "inspect", "--spec", s(p.empty),
                                                        "--backend", "fake_manila", "--out", o()],
             expect=(s(p.empty),)),
        Case("circuits inspect", "--spec wider than the backend",
             ["circuits", "inspect", "--spec", s(p.wide_spec), "--backend", "fake_manila", "--out", o()],
             expect=("12",)),
        Case("circuits inspect", "--backend nope", ["circuits", "inspect", "--model", s(p.hybrid), "--backend",
                                                    "nope", "--out", o()], expect=("nope",)),
        Case("circuits inspect", "--noise-model broken JSON",
             ["circuits", "inspect", "--model", s(p.hybrid), "--backend", "fake_manila", "--noise-model",
              s(p.bad_json), "--out", o()], expect=(s(p.bad_json.name),)),
        Case("circuits inspect", "--seed -1 (transpiler seed)", ["circuits", "inspect", "--model", s(p.hybrid),
                                                                  "--backend", "fake_manila", "--seed", "-1"],
             expect=("-1",)),
        Case("circuits inspect", "--opt-level 9", ["circuits", "inspect", "--model", s(p.hybrid), "--backend",
                                                   "fake_manila", "--opt-level", "9"], expect=("9",)),
        Case("circuits inspect", "neither --model nor --spec", ["circuits", "inspect", "--backend", "fake_manila"],
             expect=("--model",)),
        # circuits study
        Case("circuits study", "--ansatze nope", ["circuits", "study", *tiny_study, "--ansatze", "nope",
                                                  "--out", o()], expect=("nope",)),
        Case("circuits study", "--qubits 0", ["circuits", "study", *tiny_study, "--qubits", "0", "--out", o()],
             expect=("0",)),
        Case("circuits study", "--qubits 100 (too many)", ["circuits", "study", *tiny_study, "--qubits", "100",
                                                           "--out", o()], expect=("100",)),
        Case("circuits study", "--reps 0", ["circuits", "study", "--reps", "0", "--out", o()]),
        Case("circuits study", "--samples 1", ["circuits", "study", *tiny_study, "--samples", "1", "--out", o()],
             expect=("1",)),
        Case("circuits study", "--backends '' (none)", ["circuits", "study", *tiny_study, "--backends", "",
                                                        "--out", o()], expect=("--backends",)),
        Case("circuits study", "--encoding nope", ["circuits", "study", "--encoding", "nope", "--out", o()],
             expect=("nope",)),
        Case("circuits study", "--backends fake_nope", ["circuits", "study", *tiny_study, "--backends", "fake_nope",
                                                        "--out", o()], expect=("fake_nope",)),
        Case("circuits study", "--out is a file", ["circuits", "study", *tiny_study, "--out", s(p.text)],
             expect=(s(p.text),)),
        # checked before any simulation, like '--out is a file': bad input (exit 2), not a late failure
        Case("circuits study", "--out below a file", ["circuits", "study", *tiny_study, "--out",
                                                      s(p.text / "study")], expect=(s(p.text), "choose another --out")),
        # noisy-eval
        Case("noisy-eval", "--model missing", ["noisy-eval", "--model", s(p.missing), "--backends", "fake_manila",
                                               "--out", o()], expect=(s(p.missing),)),
        Case("noisy-eval", "--model is a VAE", ["noisy-eval", "--model", s(p.vae), "--backends", "fake_manila",
                                                "--out", o()], expect=("ldm",)),
        Case("noisy-eval", "--model classical (no circuit)", ["noisy-eval", "--model", s(p.classical), "--backends",
                                                              "fake_manila", "--out", o()], expect=("hybrid",)),
        Case("noisy-eval", "--model with truncated model.safetensors",
             ["noisy-eval", "--model", s(p.truncated), "--backends", "fake_manila", "--out", o()],
             expect=("model.safetensors",)),
        Case("noisy-eval", "--model with broken config.json",
             ["noisy-eval", "--model", s(p.broken), "--backends", "fake_manila", "--out", o()],
             expect=("config.json",)),
        Case("noisy-eval", "no --backends or --noise-model", ["noisy-eval", "--model", s(p.hybrid), "--out", o()],
             expect=("--backends",)),
        Case("noisy-eval", "--backends fake_nope", ["noisy-eval", "--model", s(p.hybrid), "--backends", "fake_nope",
                                                    "--out", o()], expect=("fake_nope",)),
        Case("noisy-eval", "--noise-model broken JSON", ["noisy-eval", "--model", s(p.hybrid), "--noise-model",
                                                         s(p.bad_json), "--out", o()], expect=(s(p.bad_json.name),)),
        Case("noisy-eval", "--noise-model missing", ["noisy-eval", "--model", s(p.hybrid), "--noise-model",
                                                     s(p.missing), "--out", o()], expect=(s(p.missing),)),
        Case("noisy-eval", "--n 0", ["noisy-eval", "--model", s(p.hybrid), "--backends", "fake_manila", "--n", "0"]),
        Case("noisy-eval", "--steps 100000", ["noisy-eval", "--model", s(p.hybrid), "--backends", "fake_manila",
                                              "--n", "2", "--steps", "100000", "--out", o()], expect=("100000",)),
        Case("noisy-eval", "--seed -1", ["noisy-eval", "--model", s(p.hybrid), "--backends", "fake_manila",
                                          "--seed", "-1"], expect=("-1",)),
        Case("noisy-eval", "--shots -5", ["noisy-eval", "--model", s(p.hybrid), "--backends", "fake_manila",
                                          "--shots", "-5"]),
        Case("noisy-eval", "--out is a file", ["noisy-eval", "--model", s(p.hybrid), "--backends", "fake_manila",
                                               "--n", "2", "--steps", "2", "--shots", "32", "--out", s(p.text)],
             expect=(s(p.text),)),
        Case("noisy-eval", "--mitigation pec", ["noisy-eval", "--model", s(p.hybrid), "--backends", "fake_manila",
                                                "--mitigation", "pec"], expect=("pec",)),
        Case("noisy-eval", "--mitigation-sweep with --mitigation", ["noisy-eval", "--model", s(p.hybrid), "--backends",
                                                                   "fake_manila", "--mitigation-sweep", "--mitigation",
                                                                   "trex"], expect=("--mitigation-sweep",)),
        Case("noisy-eval", "--zne-factors without zne", ["noisy-eval", "--model", s(p.hybrid), "--backends",
                                                         "fake_manila", "--mitigation", "trex", "--zne-factors", "1,3"],
             expect=("--zne-factors",)),
        # jobs submit
        Case("jobs submit", "--mitigation readout", ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila",
                                                     "--mitigation", "readout", "--jobs-dir", o()], expect=("readout",)),
        Case("jobs submit", "--mitigation with --resilience-level",
             ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila", "--mitigation", "zne",
              "--resilience-level", "1", "--jobs-dir", o()], expect=("--resilience-level",)),
        Case("jobs submit", "--mitigation zne --zne-factors 1", ["jobs", "submit", "--model", s(p.hybrid), "--backend",
                                                                 "fake_manila", "--mitigation", "zne", "--zne-factors",
                                                                 "1", "--jobs-dir", o()], expect=("noise factors",)),
        Case("jobs submit", "--primitive sampler", ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila",
                                                    "--primitive", "sampler", "--jobs-dir", o()], expect=("sampler",)),
        Case("jobs submit", "--model missing", ["jobs", "submit", "--model", s(p.missing), "--backend", "fake_manila",
                                                "--jobs-dir", o()], expect=(s(p.missing),)),
        Case("jobs submit", "--model is a VAE", ["jobs", "submit", "--model", s(p.vae), "--backend", "fake_manila",
                                                 "--jobs-dir", o()], expect=("ldm",)),
        Case("jobs submit", "--model classical (no circuit)", ["jobs", "submit", "--model", s(p.classical),
                                                               "--backend", "fake_manila", "--n", "2", "--steps",
                                                               "2", "--jobs-dir", o()], expect=("classical",)),
        Case("jobs submit", "--model with truncated model.safetensors",
             ["jobs", "submit", "--model", s(p.truncated), "--backend", "fake_manila", "--n", "2", "--steps", "2",
              "--jobs-dir", o()], expect=("model.safetensors",)),
        Case("jobs submit", "--model with broken config.json",
             ["jobs", "submit", "--model", s(p.broken), "--backend", "fake_manila", "--jobs-dir", o()],
             expect=("config.json",)),
        Case("jobs submit", "--backend fake_nope", ["jobs", "submit", "--model", s(p.hybrid), "--backend",
                                                    "fake_nope", "--jobs-dir", o()], expect=("fake_nope",)),
        Case("jobs submit", "--n 0", ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila",
                                      "--n", "0", "--jobs-dir", o()], expect=("--n",)),
        Case("jobs submit", "--steps -1", ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila",
                                           "--steps", "-1", "--jobs-dir", o()], expect=("--steps",)),
        Case("jobs submit", "--steps 100000", ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila",
                                               "--steps", "100000", "--jobs-dir", o()], expect=("100000",)),
        Case("jobs submit", "--shots 0", ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila",
                                          "--shots", "0"]),
        Case("jobs submit", "--resilience-level 5", ["jobs", "submit", "--model", s(p.hybrid), "--backend",
                                                     "fake_manila", "--resilience-level", "5"], expect=("5",)),
        Case("jobs submit", "--poll 0", ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila",
                                         "--poll", "0"]),
        Case("jobs submit", "--mode nope", ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila",
                                            "--mode", "nope"], expect=("nope",)),
        Case("jobs submit", "--jobs-dir is a file", ["jobs", "submit", "--model", s(p.hybrid), "--backend",
                                                     "fake_manila", "--n", "2", "--steps", "2", "--jobs-dir",
                                                     s(p.text)], expect=(s(p.text),)),
        Case("jobs submit", "--max-qpu-seconds 0", ["jobs", "submit", "--model", s(p.hybrid), "--backend",
                                                    "fake_manila", "--max-qpu-seconds", "0"],
             expect=("--max-qpu-seconds",)),
        Case("jobs submit", "--max-qpu-seconds below the estimate (refused before anything is written)",
             ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila", "--n", "2", "--steps", "2",
              "--max-qpu-seconds", "0.5", "--jobs-dir", o()], expect=("--max-qpu-seconds 0.5", "estimated")),
        Case("jobs submit", "--dry-run --max-qpu-seconds below the estimate",
             ["jobs", "submit", "--model", s(p.hybrid), "--backend", "fake_manila", "--n", "2", "--steps", "2",
              "--dry-run", "--max-qpu-seconds", "0.5", "--jobs-dir", o()], expect=("--max-qpu-seconds 0.5",)),
        Case("jobs submit", "--json without --dry-run", ["jobs", "submit", "--model", s(p.hybrid), "--backend",
                                                         "fake_manila", "--json"], expect=("--dry-run",)),
        # jobs list / status / fetch / resume
        Case("jobs list", "--jobs-dir is a file", ["jobs", "list", "--jobs-dir", s(p.text)], expect=(s(p.text),)),
        Case("jobs list", "--jobs-dir missing (nothing to list: exit 0)", ["jobs", "list", "--jobs-dir",
                                                                           s(p.missing)], code=0),
        Case("jobs list", "a record that is not JSON (listed as DAMAGED: exit 0)",
             ["jobs", "list", "--jobs-dir", s(p.jobs)], code=0),
        Case("jobs status", "unknown run id", ["jobs", "status", "nope", "--jobs-dir", s(p.jobs)], expect=("nope",)),
        Case("jobs status", "run id with a path in it", ["jobs", "status", "../x", "--jobs-dir", s(p.jobs)],
             expect=("../x",)),
        Case("jobs status", "record is not JSON", ["jobs", "status", "bad-record", "--jobs-dir", s(p.jobs)], code=1,
             expect=("bad-record.json",)),
        Case("jobs status", "--jobs-dir missing", ["jobs", "status", "r1", "--jobs-dir", s(p.missing)],
             expect=(s(p.missing),)),
        Case("jobs status", "--jobs-dir is a file", ["jobs", "status", "r1", "--jobs-dir", s(p.text)],
             expect=(s(p.text),)),
        Case("jobs fetch", "unknown run id", ["jobs", "fetch", "nope", "--jobs-dir", s(p.jobs)], expect=("nope",)),
        Case("jobs fetch", "record is not JSON", ["jobs", "fetch", "bad-record", "--jobs-dir", s(p.jobs)], code=1,
             expect=("bad-record.json",)),
        Case("jobs fetch", "no run id", ["jobs", "fetch"], expect=("run_id",)),
        Case("jobs resume", "unknown run id", ["jobs", "resume", "nope", "--jobs-dir", s(p.jobs)], expect=("nope",)),
        Case("jobs resume", "record is not JSON", ["jobs", "resume", "bad-record", "--jobs-dir", s(p.jobs)], code=1,
             expect=("bad-record.json",)),
        Case("jobs resume", "--poll -1", ["jobs", "resume", "bad-record", "--poll", "-1"], expect=("-1",)),
        Case("jobs cancel", "unknown run id", ["jobs", "cancel", "nope", "--jobs-dir", s(p.jobs)], expect=("nope",)),
        Case("jobs cancel", "record is not JSON", ["jobs", "cancel", "bad-record", "--jobs-dir", s(p.jobs)], code=1,
             expect=("bad-record.json",)),
        Case("jobs cancel", "no run id", ["jobs", "cancel"], expect=("run_id",)),
    ]


def run_case(case: Case, timeout: float = 240) -> dict:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("QISKIT_IBM_TOKEN", None)  # never an IBM Quantum call
    t0 = time.perf_counter()
    # a process group of its own: a timeout ends the command and any worker processes it started
    proc = subprocess.Popen([QHYBRID, *map(str, case.args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        code = None
    seconds = time.perf_counter() - t0
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("qhybrid: error")]
    printed = lines[0] if len(lines) == 1 else (stderr.strip().splitlines() or [""])[-1]
    if code == 0 and not lines:  # a case that is meant to succeed: its first line of output
        printed = (stdout.strip().splitlines() or [""])[0]
    problems = check(case, code, stderr)
    return {"case": case, "code": code, "printed": printed, "problems": problems, "seconds": seconds,
            "stderr": stderr}


def check(case: Case, code, stderr: str) -> list[str]:
    """What breaks the convention (an empty list if nothing)."""
    if code is None:
        return ["timed out"]
    problems = []
    if code != case.code:
        problems.append(f"exit {code}, expected {case.code}")
    if case.code == 0:
        return problems
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("qhybrid: error")]
    if len(lines) != 1:
        problems.append(f"{len(lines)} 'qhybrid: error' lines")
    if "Traceback" in stderr and "--debug" not in case.args:
        problems.append("traceback")
    line = lines[0] if lines else ""
    raw = [r for r in RAW if r in line]
    if raw:
        problems.append(f"raw exception text ({raw[0]!r})")
    missing = [e for e in case.expect if e.lower() not in line.lower()]
    if missing:
        problems.append(f"does not name {missing[0]!r}")
    return problems


def markdown(results: list[dict], paths: SimpleNamespace) -> str:
    def cell(text) -> str:
        return str(text).replace(str(paths.out), "$TMP/out").replace(str(paths.root), "$TMP").replace("|", "\\|").replace("\n", " ")

    broken = [r for r in results if r["problems"]]
    rows = ["| command | bad input | exit code | what it printed |", "|---|---|---:|---|"]
    for r in results:
        c = r["case"]
        mark = "" if not r["problems"] else " **BREAKS: " + "; ".join(r["problems"]) + "**"
        rows.append(f"| {cell(c.command)} | {cell(c.bad)} | {r['code']} | `{cell(r['printed'])}`{mark} |")
    return (
        "# qhybrid CLI audit\n\n"
        "Generated by `.venv/bin/python benchmarks/cli_audit.py` (do not edit by hand). Every subcommand is run "
        "as a real process with bad input; the convention is exit 2 for bad input and 1 for a runtime "
        "failure, with exactly one `qhybrid: error: ...` line naming the problem and no traceback. `$TMP` is "
        "the audit's temporary folder (a tiny trained VAE, hybrid and classical LDMs and validator, a "
        "truncated `model.safetensors`, a broken `config.json`, an empty folder, `notes.txt`, a text file "
        "named `photo.png`, a job record that is not JSON).\n\n"
        f"{len(results)} cases, {len(broken)} breaking the convention.\n\n" + "\n".join(rows) + "\n"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "cli-audit.md"), help="the table (Markdown)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the table alone")
    parser.add_argument("--only", default=None, help="run only cases whose 'command: bad input' contains this")
    parser.add_argument("--skip", default=None, help="leave out cases whose 'command: bad input' contains this")
    parser.add_argument("--keep", default=None, help="build the inputs in this folder and keep it")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qhybrid-audit-"))
    try:
        t0 = time.perf_counter()
        paths = make_inputs(tmp)
        print(f"inputs ready in {time.perf_counter() - t0:.0f} s ({tmp})", file=sys.stderr)
        selected = [c for c in cases(paths) if (args.only is None or args.only in c.id)
                    and (args.skip is None or args.skip not in c.id)]
        results = []
        for case in selected:
            r = run_case(case)
            results.append(r)
            flag = "ok   " if not r["problems"] else "BREAK"
            print(f"{flag} {r['seconds']:5.1f}s  {case.id}  -> {r['code']}  {r['printed'][:160]}"
                  + ("" if not r["problems"] else f"   [{'; '.join(r['problems'])}]"), file=sys.stderr)
        if not args.no_write and args.only is None and args.skip is None:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(markdown(results, paths))
            print(f"results: {args.out}", file=sys.stderr)
        broken = [r for r in results if r["problems"]]
        print(f"{len(results)} cases, {len(broken)} breaking the convention", file=sys.stderr)
        return 1 if broken else 0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
