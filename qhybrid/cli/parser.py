"""The ``qhybrid`` argument parser: subcommands, their flags, and argparse types that turn bad values
into one-line usage errors (exit 2). Each subcommand's ``func`` is a function of
:mod:`qhybrid.cli.commands`."""

from __future__ import annotations

import argparse
from pathlib import Path

from qhybrid import __version__
from qhybrid.cli import commands
from qhybrid.cli.usage import UsageError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _number(convert, ok, expected: str):
    """An argparse type: ``convert`` the text, then check ``ok``; both failures name what is expected."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value
    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")


_seed = _number(int, lambda v: v >= 0, "a non-negative integer")


_head_count = _number(int, lambda v: 0 <= v <= 64, "an integer from 0 to 64")


_positive_float = _number(float, lambda v: v > 0, "a positive number")


_nonnegative_float = _number(float, lambda v: 0 <= v < 1000, "a number from 0 to 1000")


_eta = _number(float, lambda v: 0 <= v <= 1, "a number from 0 (deterministic DDIM) to 1 (DDPM-like)")


#: Shots the command line accepts for one circuit evaluation: below 32 a single expectation value's
#: standard error exceeds 0.18 (sqrt(1/32)); above a million the Aer and IBM Quantum runs are long.
SHOTS_RANGE = (32, 1_000_000)
_shots = _number(int, lambda v: SHOTS_RANGE[0] <= v <= SHOTS_RANGE[1],
                 f"a shot count from {SHOTS_RANGE[0]} to {SHOTS_RANGE[1]:,}")


def _shots_list(text: str) -> list[int]:
    """argparse type: comma-separated shot counts (``1024,4096,32768``), each within :data:`SHOTS_RANGE`."""
    values = [_shots(v.strip()) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated shot counts, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"shot counts repeat in {text!r}")
    return values


def _folder(text: str) -> str:
    """argparse type: an output folder; an existing file in its place is a usage error."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    return text


def _existing_file(text: str) -> str:
    """argparse type: a file to read."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file")
    return text


def _list(text: str) -> list[str]:
    """argparse type: a comma-separated list of names or folders."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return values


def _file(text: str) -> str:
    """argparse type: an output file; an existing folder in its place is a usage error."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name to write")
    return text


def _add_target_options(parser) -> None:
    parser.add_argument("--target", default="ideal", help="ideal (default), fake:<backend>, ibm:<backend>")
    parser.add_argument("--shots", type=_shots, default=None,
                        help="fake and ibm targets: shots per evaluation (default 1024); ideal: shot noise only")
    parser.add_argument("--mitigation", nargs="?", const="readout", default=None, choices=MITIGATION_KINDS,
                        metavar="KIND", help="error mitigation: none, readout (fake: only; the default when the flag "
                        "has no value), trex, zne, twirling, trex+zne (runtime executor; ibm: targets take them in 'jobs submit')")
    _add_zne_options(parser)
    parser.add_argument("--method", choices=["counts", "estimator"], default="counts",
                        help="fake target: counts (one execution for all Z observables) or Aer EstimatorV2")
    parser.add_argument("--opt-level", type=int, choices=[0, 1, 2, 3], default=2, help="transpiler optimisation level")
    parser.add_argument("--noise-model", default=None, help="fake target: run from a noise-model snapshot JSON")


def _add_zne_options(parser) -> None:
    parser.add_argument("--zne-factors", default=None, metavar="F1,F2,...",
                        help="with --mitigation zne or trex+zne: noise factors >= 1 (default 1,3,5, the runtime's)")
    parser.add_argument("--zne-extrapolator", default=None, metavar="NAME[,NAME]",
                        help="with --mitigation zne or trex+zne: exponential, linear, polynomial_degree_2, ... tried in order "
                             "(default exponential,linear, the runtime's)")


def _kinds(text: str) -> list[str]:
    """argparse type: comma-separated mitigation kinds (``none,trex,zne``)."""
    kinds = [k.strip().lower() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in MITIGATION_KINDS]
    if not kinds or bad:
        raise argparse.ArgumentTypeError(f"unknown mitigation {', '.join(bad) or repr(text)}; allowed: "
                                         f"{', '.join(MITIGATION_KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise argparse.ArgumentTypeError(f"a mitigation repeats in {text!r}")
    return kinds


def _int_list(allowed: tuple[int, ...] | None = None):
    """argparse type: a comma-separated list of integers (``0,1,2``)."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
        bad = [v for v in values if allowed is not None and v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad[0]} is not one of {', '.join(map(str, allowed))}")
        return values
    return parse


MITIGATION_KINDS = ("none", "readout", "trex", "zne", "twirling", "trex+zne")  # qhybrid.quantum.mitigation.KINDS


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qhybrid", description="Hybrid quantum-classical latent diffusion for fundus images.")
    parser.add_argument("--version", action="version", version=f"qhybrid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    _add_demo(sub)
    _add_data(sub)
    _add_training(sub)
    _add_sampling(sub)
    _add_evaluation(sub)
    _add_quantum(sub)
    _add_noise_aware(sub)
    _add_jobs(sub)
    return parser


def _device(text: str) -> str:
    """auto, cpu, cuda or cuda:N (whether that GPU exists is checked when the command runs)."""
    value = text.strip().lower()
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")


def _add_device(parser, what: str) -> None:
    parser.add_argument("--device", type=_device, default="auto",
                        help=f"where {what} run: auto (a CUDA GPU if PyTorch sees one, else the CPU), cpu, cuda or cuda:N")


def _add_precision(parser, measured: str) -> None:
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="the training step's arithmetic: fp32 (default), or mixed precision with bf16 or fp16 "
                             "autocast (weights, optimiser and checkpoint stay float32; the quantum layers run in "
                             f"float32). {measured}")


def _add_demo(sub) -> None:
    """The main job."""
    demo = sub.add_parser(
        "demo",
        help="the main job: VAE + three latent diffusion models on built-in data, and a report",
        description="Copy the shipped first-stage VAE (--quick: train a tiny one), train the classical, "
        "classical-large and hybrid denoisers on its latents of built-in synthetic fundus images, sample from each, "
        "score them with the shipped validator and encoder and write a report.",
    )
    demo.add_argument("--out", type=_folder, default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.add_argument("--quick", action="store_true", help="tiny sizes (about half a minute), for smoke tests")
    demo.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    demo.add_argument("--with-qvae", action="store_true",
                      help="also train the quantum-enhanced VAE (QResBlocks) and a hybrid denoiser on it")
    demo.add_argument("--with-ablations", action="store_true",
                      help="also train hybrid-classical-core, hybrid-frozen and hybrid-affine-core (their training took "
                           "6 min on a 2-core machine, plus their sampling)")
    _add_device(demo, "training, sampling and evaluation")
    demo.set_defaults(func=commands.cmd_demo)


def _add_data(sub) -> None:
    """Data synth | show."""
    data = sub.add_parser("data", help="fundus data: synthesise, show").add_subparsers(
        dest="data_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    synth = data.add_parser("synth", help="write synthetic fundus PNGs and labels.csv")
    synth.add_argument("--out", type=_folder, required=True, help="output folder")
    synth.add_argument("--n", type=_positive_int, default=64, help="number of images (default 64)")
    synth.add_argument("--size", type=_positive_int, default=64, help="pixels, 32-256 (default 64)")
    synth.add_argument("--seed", type=_seed, default=0)
    synth.add_argument("--grade", type=int, default=None, help="fix the DR grade (0-4)")
    synth.set_defaults(func=commands.cmd_data_synth)
    show = data.add_parser("show", help="write a grid of a data set")
    show.add_argument("source", help="'synthetic', an image folder or an .npz file")
    show.add_argument("--out", type=_file, required=True, help="PNG file to write")
    show.add_argument("--n", type=_positive_int, default=16)
    show.add_argument("--size", type=_positive_int, default=64)
    show.add_argument("--split", default="train", choices=["train", "val", "test", "all"])
    show.add_argument("--seed", type=_seed, default=0)
    show.set_defaults(func=commands.cmd_data_show)


def _add_quantum_layer(parser, who: str, *, encoding: str, patch: int, where: str) -> None:
    """The QResBlock options the VAE and the denoiser share (with their own defaults)."""
    other = "angle" if encoding == "reuploading" else "reuploading"
    parser.add_argument("--encoding", choices=[encoding, other], default=encoding,
                        help=f"{who}: angles encoded once (angle) or re-uploaded before every ansatz repetition "
                             f"(reuploading); default {encoding}")
    parser.add_argument("--placement", choices=["qresblock", "bottleneck", "gated-qresblock"], default="qresblock",
                        help=f"{who}: qresblock (default): QResBlocks with the circuit at every patch of the {where}, on "
                             "their only residual path; bottleneck and gated-qresblock: qhybrid 0.1/0.2's gated branch")
    parser.add_argument("--patch", type=_positive_int, default=patch,
                        help=f"{who}: the circuit runs once per PATCHxPATCH patch of the {where} (default {patch})")
    parser.add_argument("--circuit-lr", type=_positive_float, default=None,
                        help=f"{who}: the circuit weights' peak LR (default: the measured one, see BENCHMARKS.md)")


def _add_training(sub) -> None:
    """Train vae | diffusion."""
    train = sub.add_parser("train", help="train a VAE or a latent diffusion model").add_subparsers(
        dest="train_command", metavar="MODEL", parser_class=_Parser, required=True)
    vae = train.add_parser("vae", help="train a classical or quantum-enhanced VAE")
    vae.add_argument("--data", default="synthetic", help="'synthetic' (default), an image folder or an .npz")
    vae.add_argument("--size", type=_positive_int, default=64, help="image size: 32, 64 or 128")
    vae.add_argument("--quantum", action="store_true", help="quantum-enhanced: QResBlocks with the circuit per patch")
    vae.add_argument("--qubits", type=_positive_int, default=6, help="quantum block width (default 6)")
    vae.add_argument("--reps", type=_positive_int, default=2, help="ansatz repetitions (default 2)")
    vae.add_argument("--ansatz", default="real_amplitudes")
    _add_quantum_layer(vae, "quantum", encoding="angle", patch=4,
                       where="encoder and decoder middle at the latent resolution (16x16 by default)")
    vae.add_argument("--width", type=_positive_int, default=16, help="base channel count (default 16)")
    vae.add_argument("--latent-channels", type=_positive_int, default=4, help="latent channels (default 4)")
    vae.add_argument("--latent-size", type=_positive_int, default=None,
                     help="latent side: the image size divided by a power of two (default 16; 8 at 32 px); "
                          "32 at 64 px keeps the thin vessels (the shipped fundus-vae-64-l32)")
    vae.add_argument("--detail-weight", type=_nonnegative_float, default=16.0,
                     help="weight of the Laplacian-pyramid (fine detail) loss that keeps thin vessels "
                          "(default 16; 0 trains on L1 + KL alone, as qhybrid did before)")
    vae.add_argument("--epochs", type=_positive_int, default=20)
    vae.add_argument("--n", type=_positive_int, default=None, help="training images (synthetic: 512)")
    vae.add_argument("--batch", type=_positive_int, default=16)
    vae.add_argument("--lr", type=_positive_float, default=2e-3)
    vae.add_argument("--seed", type=_seed, default=0)
    vae.add_argument("--out", type=_folder, required=True, help="checkpoint folder, e.g. runs/x/vae")
    vae.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    _add_device(vae, "the networks")
    _add_precision(vae, "Not measured for the VAE; see the README for the denoisers")
    vae.set_defaults(func=commands.cmd_train_vae)
    ldm = train.add_parser("diffusion", help="train a latent denoiser on a trained VAE")
    ldm.add_argument("--vae", required=True, help="VAE checkpoint folder")
    ldm.add_argument("--denoiser", required=True, choices=["classical", "classical-large", "hybrid", "hybrid-classical-core",
                                                            "hybrid-frozen", "hybrid-affine-core"],
                     help="hybrid-classical-core / hybrid-frozen / hybrid-affine-core: ablations that replace only "
                          "the circuit")
    ldm.add_argument("--ansatz", default="real_amplitudes", help="hybrid: circuit ansatz (see 'circuits study')")
    _add_quantum_layer(ldm, "hybrid", encoding="reuploading", patch=2, where="8x8 bottleneck")
    ldm.add_argument("--data", default="synthetic", help="the VAE's training source (default synthetic)")
    ldm.add_argument("--n", type=_positive_int, default=None, help="training images (synthetic: 512)")
    ldm.add_argument("--steps", type=_positive_int, default=1200)
    ldm.add_argument("--batch", type=_positive_int, default=64)
    ldm.add_argument("--lr", type=_positive_float, default=2e-3)
    ldm.add_argument("--qubits", type=_positive_int, default=6, help="hybrid: quantum block width (default 6)")
    ldm.add_argument("--reps", type=_positive_int, default=3, help="hybrid: ansatz repetitions (default 3)")
    ldm.add_argument("--schedule", default="cosine", help="beta schedule: cosine or linear")
    ldm.add_argument("--prediction", choices=["epsilon", "v_prediction"], default="v_prediction",
                     help="what the denoiser predicts (default v_prediction: over three seeds it beat epsilon, FD 41 "
                          "against 183; see the README)")
    ldm.add_argument("--min-snr-gamma", type=_number(float, lambda v: 0 < v < 1e6, "a positive number below 1e6"),
                     default=None, metavar="GAMMA",
                     help="min-SNR-gamma loss weighting (Hang et al. 2023, who use 5; default: off, the plain MSE, "
                          "which did better here with v-prediction: see the README); the logged loss is then the "
                          "weighted one")
    ldm.add_argument("--seed", type=_seed, default=0)
    ldm.add_argument("--out", type=_folder, required=True, help="checkpoint folder, e.g. runs/x/ldm-hybrid")
    ldm.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    ldm.add_argument("--noise-aware", default=None, metavar="fake:BACKEND",
                     help="hybrid: train for this backend's noise (a surrogate fitted on Aer sits after the circuit "
                          "while training; sampling on ideal stays exact)")
    ldm.add_argument("--noise-shots", type=_shots, default=None, help="--noise-aware: the shots it trains for (default 4096)")
    ldm.add_argument("--noise-consistency", type=_number(float, lambda v: 0 <= v < 1e6, "a number >= 0"), default=None,
                     help="--noise-aware: weight of |noisy - exact|^2 of the predictions in the loss (default 4)")
    ldm.add_argument("--surrogate", type=_existing_file, default=None,
                     help="--noise-aware: a surrogate from 'qhybrid noise surrogate' (default: fit one at the start)")
    ldm.add_argument("--init-from", default=None, metavar="LDM",
                     help="fine-tune: start from this hybrid checkpoint's weights (same VAE), e.g. with --noise-aware")
    ldm.add_argument("--attention-heads", type=_head_count, default=0, metavar="N",
                     help="a self-attention block of N heads at the bottleneck, after the middle block (default "
                          "0: none). Over three seeds of the demo's hybrid recipe 4 heads lowered FD in every seed (mean "
                          "95 -> 76, intervals overlapping); for the classical model (one seed) it changed nothing: "
                          "see the README")
    _add_device(ldm, "the networks")
    _add_precision(ldm, "bf16 trained the large denoiser 1.4x faster on this project's CPU (AVX-512 BF16) with "
                        "samples of the same quality, the small ones no faster: see the README")
    ldm.set_defaults(func=commands.cmd_train_diffusion)


def _add_sampling(sub) -> None:
    """Sample."""
    sample = sub.add_parser("sample", help="sample images from a trained latent diffusion model")
    sample.add_argument("--model", required=True, help="LDM checkpoint folder")
    sample.add_argument("--n", type=_positive_int, default=64)
    sample.add_argument("--steps", type=_positive_int, default=50, help="sampling steps (default 50)")
    sample.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    sample.add_argument("--eta", type=_eta, default=0.0, help="DDIM noise, 0 to 1 (0 = deterministic)")
    _add_target_options(sample)
    sample.add_argument("--vae", default=None, help="the VAE folder, if not where the model's checkpoint says")
    sample.add_argument("--jobs-dir", type=_folder, default="jobs", help="ibm target: where the job record goes (default jobs/)")
    sample.add_argument("--seed", type=_seed, default=0)
    sample.add_argument("--out", type=_folder, required=True, help="output folder")
    _add_device(sample, "the denoiser and the VAE")
    sample.set_defaults(func=commands.cmd_sample)


def _add_evaluation(sub) -> None:
    """Validator, encoder, evaluate, compare."""
    val = sub.add_parser("validator", help="the gradability (image-quality) validator").add_subparsers(
        dest="validator_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    vt = val.add_parser("train", help="train the validator (synthetic + degradations, or a labelled folder)")
    vt.add_argument("--out", type=_folder, required=True)
    vt.add_argument("--data", default="synthetic", help="'synthetic' or an image folder with a quality CSV")
    vt.add_argument("--n", type=_positive_int, default=600, help="synthetic base images (default 600)")
    vt.add_argument("--epochs", type=_positive_int, default=10)
    vt.add_argument("--seed", type=_seed, default=1234)
    _add_device(vt, "the network")
    vt.set_defaults(func=commands.cmd_validator_train)
    vs = val.add_parser("score", help="probability that each image is gradable")
    vs.add_argument("--model", required=True, help="validator folder")
    vs.add_argument("images", nargs="+", help="image files and/or folders")
    vs.add_argument("--labels", default=None, metavar="CSV",
                    help="quality labels (file name + Good/Usable/Reject column): also report agreement with them "
                         "(default: a folder's labels.csv when one folder is scored)")
    vs.add_argument("--json", action="store_true", help="print a JSON list")
    _add_device(vs, "the network")
    vs.set_defaults(func=commands.cmd_validator_score)

    enc = sub.add_parser("encoder", help="the fundus feature encoder used by the metrics").add_subparsers(
        dest="encoder_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    et = enc.add_parser("train", help="train the fundus feature encoder")
    et.add_argument("--out", type=_folder, required=True)
    et.add_argument("--n", type=_positive_int, default=600)
    et.add_argument("--epochs", type=_positive_int, default=8)
    et.add_argument("--seed", type=_seed, default=2024)
    _add_device(et, "the network")
    et.set_defaults(func=commands.cmd_encoder_train)

    ev = sub.add_parser("evaluate", help="compare generated images with real ones (metrics with intervals)")
    ev.add_argument("--real", required=True, help="'synthetic', an image folder or an .npz")
    ev.add_argument("--generated", required=True, nargs="+", help="generated image folder(s) or files")
    ev.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="real split (default test)")
    ev.add_argument("--n-real", type=_positive_int, default=None, help="cap on real images (synthetic: 128)")
    ev.add_argument("--size", type=_positive_int, default=None, help="compare at this size (default: generated size)")
    ev.add_argument("--encoder", default=None, help="feature encoder folder (qhybrid encoder train)")
    ev.add_argument("--validator", default=None, help="validator folder (qhybrid validator train)")
    ev.add_argument("--inception", default=None, help="local TorchScript Inception file for FID/KID")
    ev.add_argument("--k", type=_positive_int, default=5, help="k of the k-NN metrics")
    ev.add_argument("--bootstrap", type=_positive_int, default=100, help="bootstrap draws")
    ev.add_argument("--seed", type=_seed, default=0)
    ev.add_argument("--json", type=_file, default=None, help="write all figures to this JSON file")
    _add_device(ev, "the encoder and the validator")
    ev.set_defaults(func=commands.cmd_evaluate)

    cmp_ = sub.add_parser("compare", help="sample and evaluate every model of a run folder")
    cmp_.add_argument("run", help="run folder (e.g. runs/demo)")
    cmp_.add_argument("--n", type=_positive_int, default=64, help="samples per model")
    cmp_.add_argument("--steps", type=_positive_int, default=50)
    cmp_.add_argument("--n-real", type=_positive_int, default=200)
    cmp_.add_argument("--k", type=_positive_int, default=5)
    cmp_.add_argument("--bootstrap", type=_positive_int, default=100)
    cmp_.add_argument("--validator", default=None, help="validator folder (default: RUN/validator, a copy of the shipped fundus-validator-64 "
                                                                    "if missing)")
    cmp_.add_argument("--encoder", default=None, help="encoder folder (default: RUN/encoder, a copy of the shipped fundus-encoder-64 if "
                                                                  "missing)")
    cmp_.add_argument("--inception", default=None)
    cmp_.add_argument("--seed", type=_seed, default=0, help="sampling seed")
    cmp_.add_argument("--seeds", type=_positive_int, default=1,
                      help="training seeds per model: trains ldm-<kind>-seed<K> for K < SEEDS where missing (the saved "
                           "recipe, another seed) and reports every figure as mean ± spread over seeds")
    cmp_.add_argument("--train-sizes", type=_int_list(), default=None,
                      help="data-scarcity sweep: train every denoiser on each number of images (e.g. 64,256,1024) "
                           "with the run's VAE, compare each size, plot metrics against size (resumable)")
    cmp_.add_argument("--kinds", default=None, help="sweep: denoisers to train (default: all, ablations included)")
    cmp_.add_argument("--train-steps", type=_positive_int, default=None, help="sweep: training steps (default 1200)")
    cmp_.add_argument("--qubits", type=_positive_int, default=6, help="sweep: hybrid circuit width (default 6)")
    cmp_.add_argument("--reps", type=_positive_int, default=3, help="sweep: ansatz repetitions (default 3)")
    _add_device(cmp_, "training (the sweep, --seeds replicas), sampling and the evaluators")
    cmp_.set_defaults(func=commands.cmd_compare)


def _add_quantum(sub) -> None:
    """Backends, doctor, noise, circuits, noisy-eval."""
    backends = sub.add_parser("backends", help="list the fake backends: qubits, 2q gate, median errors, T1, "
                              "calibration date (cached per qiskit-ibm-runtime version)")
    fit = backends.add_mutually_exclusive_group()
    fit.add_argument("--model", default=None, help="a hybrid LDM (or quantum VAE) folder: say which backends fit it")
    fit.add_argument("--qubits", type=_positive_int, default=None, help="say which backends have this many qubits")
    backends.add_argument("--json", action="store_true", help="print the summaries as JSON")
    backends.set_defaults(func=commands.cmd_backends)

    doctor = sub.add_parser("doctor", help="versions, fake backends, account (never shown), disk: for bug reports")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(func=commands.cmd_doctor)

    noise = sub.add_parser("noise", help="noise-model snapshots").add_subparsers(
        dest="noise_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    snap = noise.add_parser("snapshot", help="freeze a fake backend's noise model into a JSON file")
    snap.add_argument("backend", help="e.g. fake_torino")
    snap.add_argument("--out", type=_folder, default="noise_models", help="folder (default noise_models/)")
    snap.set_defaults(func=commands.cmd_noise_snapshot)
    sur = noise.add_parser("surrogate", help="fit a backend's noise surrogate for noise-aware training, and say how "
                           "well it reproduces Aer on held-out inputs")
    sur.add_argument("--model", required=True, help="a hybrid LDM checkpoint folder (its circuit and block inputs)")
    sur.add_argument("--backends", required=True, help="comma-separated fake backends, e.g. fake_torino,fake_fez")
    sur.add_argument("--shots", type=_shots, default=None, help="the shot count it will train for (default 4096)")
    sur.add_argument("--seed", type=_seed, default=0)
    sur.add_argument("--out", type=_folder, default="noise_models", help="folder (default noise_models/)")
    _add_device(sur, "the denoiser and the VAE")
    sur.set_defaults(func=commands.cmd_noise_surrogate)

    circ = sub.add_parser("circuits", help="inspect the quantum block's circuits").add_subparsers(
        dest="circuits_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    insp = circ.add_parser("inspect", help="transpile for a backend: depth, 2q gates, layout, duration, files")
    src = insp.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a hybrid LDM (or quantum VAE) checkpoint folder")
    src.add_argument("--spec", help="a CircuitSpec JSON file")
    insp.add_argument("--backend", default=None, help="fake backend, e.g. fake_torino (or give --noise-model)")
    insp.add_argument("--noise-model", default=None,
                      help="a snapshot JSON: inspect with its backend's frozen calibration instead")
    insp.add_argument("--opt-level", type=int, choices=[0, 1, 2, 3], default=2)
    insp.add_argument("--seed", type=_seed, default=0, help="transpiler seed")
    insp.add_argument("--out", type=_folder, default="circuits", help="folder (default circuits/)")
    insp.set_defaults(func=commands.cmd_circuits_inspect)

    cst = circ.add_parser("study", help="ansatz study: gradient variance, entanglement, expressibility, noise")
    cst.add_argument("--ansatze", default=None, help="comma-separated (default: all five)")
    cst.add_argument("--qubits", type=_int_list(), default=[4, 6, 8, 10], help="default 4,6,8,10")
    cst.add_argument("--reps", type=_positive_int, default=3)
    cst.add_argument("--encoding", choices=["angle", "reuploading"], default="angle")
    cst.add_argument("--backends", default=None, help="fake backends for the noise columns (default fake_torino)")
    cst.add_argument("--samples", type=_positive_int, default=200, help="random parameter draws per cell (default 200)")
    cst.add_argument("--pairs", type=_positive_int, default=1000, help="state pairs for expressibility (default 1000)")
    cst.add_argument("--noise-inputs", type=_positive_int, default=16, help="rows for the noise error (default 16)")
    cst.add_argument("--shots", type=_positive_int, default=1024)
    cst.add_argument("--opt-level", type=int, choices=[0, 1, 2, 3], default=2)
    cst.add_argument("--seed", type=_seed, default=0)
    cst.add_argument("--out", type=_folder, default="circuits/study", help="folder (default circuits/study)")
    cst.set_defaults(func=commands.cmd_circuits_study)

    ne = sub.add_parser("noisy-eval", help="sample a hybrid model on ideal and noisy fake-backend targets")
    which = ne.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="hybrid LDM checkpoint folder")
    which.add_argument("--plain", type=_list, default=None, metavar="LDM,...",
                       help="compare: plainly trained hybrid folders (one per seed), against --noise-aware")
    ne.add_argument("--noise-aware", type=_list, default=None, metavar="LDM,...",
                    help="with --plain: noise-aware trained hybrid folders; the comparison goes to --out")
    ne.add_argument("--evaluators", default=None, metavar="RUN",
                    help="with --plain: a run folder with validator/ and encoder/ for gradable %% and FD (default: the "
                         "first plain model's run folder)")
    ne.add_argument("--backends", default="", help="comma-separated fake backends, e.g. fake_torino,fake_brisbane")
    ne.add_argument("--noise-model", action="append", default=[], help="a snapshot JSON (repeatable)")
    ne.add_argument("--n", type=_number(int, lambda v: v >= 2, "at least 2 samples per target"), default=None,
                    help="samples per target (default 32; 8 with --mitigation-sweep)")
    ne.add_argument("--steps", type=_positive_int, default=None, help="DDIM steps (default 20; 10 with --mitigation-sweep)")
    ne.add_argument("--shots", type=_shots_list, default=None,
                    help="shots per circuit evaluation; several (1024,4096,32768) sweep them (default 1024; 4096 "
                         "with --mitigation-sweep and with --plain/--noise-aware)")
    ne.add_argument("--mitigation", type=_kinds, nargs="?", const=["readout"], default=None, metavar="KINDS",
                    help="comma-separated: none, readout, trex, zne, twirling, trex+zne; several compare them (default none; "
                         "the flag alone: readout)")
    ne.add_argument("--mitigation-sweep", action="store_true",
                    help="compare every mitigation (none, readout, trex, zne, twirling) per backend: error against "
                         "ideal, image change and cost, with a recommendation (default shots 4096, n 8, steps 10)")
    _add_zne_options(ne)
    ne.add_argument("--method", choices=["counts", "estimator"], default="counts")
    ne.add_argument("--opt-level", type=int, choices=[0, 1, 2, 3], default=2)
    ne.add_argument("--seed", type=_seed, default=0)
    ne.add_argument("--vae", default=None, help="the VAE folder, if not where the model's checkpoint says")
    ne.add_argument("--out", type=_folder, default=None,
                    help="output folder (default: RUN/noisy-eval/<model>-<backends>-<shots>, one per evaluation)")
    ne.add_argument("--resume", action="store_true", help="continue the evaluation in --out; finished targets are kept")
    _add_device(ne, "the denoiser, the VAE and the evaluators")
    ne.set_defaults(func=commands.cmd_noisy_eval)


def _add_noise_aware(sub) -> None:
    """The noise-aware training study."""
    na = sub.add_parser("noise-aware", help="train plain and noise-aware hybrids for several seeds and compare them "
                        "on the backend they train for and on unseen ones")
    na.add_argument("--vae", required=True, help="VAE checkpoint folder (e.g. runs/demo/vae)")
    na.add_argument("--backend", default=None, help="the backend noise-aware weights train for (default fake_torino)")
    na.add_argument("--unseen", default=None,
                    help="comma-separated backends they are also evaluated on (default fake_fez)")
    na.add_argument("--seeds", type=_int_list(), default=None, help="default 0,1,2")
    na.add_argument("--steps", type=_positive_int, default=None, help="training steps per model (default: the demo's, 1200)")
    na.add_argument("--n-train", type=_positive_int, default=None, help="training images (default: the demo's, 512)")
    na.add_argument("--prediction", choices=["epsilon", "v_prediction"], default=None,
                    help="what the denoisers predict (default: the demo's, v_prediction)")
    na.add_argument("--shots", type=_shots, default=None, help="trained for and evaluated at (default 4096)")
    na.add_argument("--noise-consistency", type=_number(float, lambda v: 0 <= v < 1e6, "a number >= 0"), default=None,
                    help="weight of the consistency term (default 4)")
    na.add_argument("--n", type=_number(int, lambda v: v >= 2, "at least 2 samples"), default=None,
                    help="samples per target (default 32)")
    na.add_argument("--sample-steps", type=_positive_int, default=None, help="DDIM steps (default 20)")
    na.add_argument("--out", type=_folder, default="runs/noise-aware", help="folder (default runs/noise-aware)")
    _add_device(na, "training, sampling and the evaluators")
    na.set_defaults(func=commands.cmd_noise_aware)


def _add_jobs(sub) -> None:
    """Jobs submit | list | status | fetch | resume | cancel."""
    jobs = sub.add_parser("jobs", help="sampling runs on IBM Quantum (or fake_* backends, locally) with job records"
                          ).add_subparsers(dest="jobs_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    js = jobs.add_parser("submit", help="sample a hybrid LDM with one runtime job per denoising step")
    js.add_argument("--model", required=True, help="hybrid LDM checkpoint folder, e.g. runs/demo/ldm-hybrid")
    js.add_argument("--backend", required=True, help="ibm_<name> (IBM Quantum) or fake_<name> (local testing mode)")
    js.add_argument("--n", type=int, default=4, help="chains (images); every chain x circuit patch goes in one PUB per "
                                                      "step (default 4: 64 bindings with the default hybrid)")
    js.add_argument("--steps", type=int, default=10, help="DDIM steps = jobs per run (default 10)")
    js.add_argument("--shots", type=_shots, default=1024)
    js.add_argument("--vae", default=None, help="the VAE folder, if not where the model's checkpoint says (recorded)")
    js.add_argument("--mode", choices=["session", "batch", "job"], default=None,
                    help="execution mode (default: session for one run, batch for several)")
    js.add_argument("--resilience-level", type=_int_list((0, 1, 2)), default=None,
                    help="0, 1 or 2; a list (0,1,2) makes one run per level (default: the service's, 1)")
    js.add_argument("--mitigation", choices=[k for k in MITIGATION_KINDS if k != "readout"], default=None,
                    help="exactly this mitigation at resilience level 0: none, trex, zne, twirling, trex+zne (instead of "
                         "--resilience-level; default: the service's level 1)")
    _add_zne_options(js)
    js.add_argument("--primitive", choices=["executor", "estimator"], default="executor",
                    help="executor (default): qiskit-ibm-runtime's client-side Estimator; estimator: the legacy "
                         "server-side EstimatorV2 (deprecated by the runtime)")
    js.add_argument("--twirling", action="store_true", help="Pauli twirling of gates and measurements")
    js.add_argument("--dd", action="store_true", help="dynamical decoupling (XY4)")
    js.add_argument("--opt-level", type=int, choices=[0, 1, 2, 3], default=2, help="transpiler optimisation level")
    js.add_argument("--seed", type=_int_list(), default=[0], help="initial-noise seed; a list (0,1,2) makes one run each")
    js.add_argument("--detach", action="store_true",
                    help="submit the next step and return without waiting (IBM Quantum backends)")
    js.add_argument("--poll", type=_positive_float, default=None, help="seconds between status checks (default 10; local 0.02)")
    js.add_argument("--jobs-dir", type=_folder, default="jobs", help="where records go (default jobs/)")
    js.add_argument("--dry-run", action="store_true",
                    help="submit nothing and write no record: print what the runs would cost on the QPU (jobs, "
                         "bindings, shots, estimated QPU seconds per image and run) and save it as "
                         "JOBS_DIR/dry-runs/<time>-<model>-<backend>.json; fake_* backends need no account")
    js.add_argument("--json", action="store_true", help="with --dry-run: print the estimate as JSON instead (no file)")
    js.add_argument("--max-qpu-seconds", type=_positive_float, default=None, metavar="S",
                    help="refuse (before anything is submitted or written) when the estimated QPU time of all the "
                         "runs exceeds S seconds; the Open Plan allows 600 s (10 minutes) per 28 days")
    _add_device(js, "the denoiser's classical layers and the VAE")
    js.set_defaults(func=commands.cmd_jobs_submit)
    jl = jobs.add_parser("list", help="list the job records")
    jl.add_argument("--jobs-dir", type=_folder, default="jobs")
    jl.set_defaults(func=commands.cmd_jobs_list)
    jst = jobs.add_parser("status", help="show a run's record (steps, job ids, options); no service calls")
    jst.add_argument("run_id")
    jst.add_argument("--json", action="store_true", help="print the record itself")
    jst.add_argument("--jobs-dir", type=_folder, default="jobs")
    jst.set_defaults(func=commands.cmd_jobs_status)
    jf = jobs.add_parser("fetch", help="collect finished job results; decode the images when all steps are done")
    jf.add_argument("run_id")
    jf.add_argument("--jobs-dir", type=_folder, default="jobs")
    _add_device(jf, "the denoiser's classical layers and the VAE")
    jf.set_defaults(func=commands.cmd_jobs_fetch)
    jr = jobs.add_parser("resume", help="continue a run from its last completed step (finished or running jobs are reused)")
    jr.add_argument("run_id")
    jr.add_argument("--detach", action="store_true", help="submit the next step and return without waiting")
    jr.add_argument("--poll", type=_positive_float, default=None, help="seconds between status checks")
    jr.add_argument("--jobs-dir", type=_folder, default="jobs")
    _add_device(jr, "the denoiser's classical layers and the VAE")
    jr.set_defaults(func=commands.cmd_jobs_resume)
    jc = jobs.add_parser("cancel", help="cancel a run's submitted, unfinished job; 'jobs resume' may continue the run "
                                        "later (a completed run: nothing to cancel, exit 0)",
                         description="Cancel the run's submitted job that has not finished (a local testing-mode job "
                                     "only from the process that submitted it), mark its step failed (CANCELLED) and "
                                     "the run cancelled. A finished job is kept for fetch/resume. A completed run has "
                                     "nothing to cancel: that is said, with exit code 0.")
    jc.add_argument("run_id")
    jc.add_argument("--jobs-dir", type=_folder, default="jobs")
    jc.set_defaults(func=commands.cmd_jobs_cancel)
