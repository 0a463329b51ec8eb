"""Mixed precision and attention on the demo's recipe: the measurements behind ``--precision`` and
``DenoiserConfig.attention_heads``.

    python benchmarks/recipe_variants.py RUN [--variants classical-large@bf16,hybrid@bf16,classical+attn,hybrid+attn]

``RUN`` is a finished ``make demo`` run (``runs/demo``): its ``vae``, ``encoder`` and ``validator`` are
used, and its own ``ldm-*`` models are the float32 rows without attention. A variant is
``KIND[+attn][@bf16|@fp16][%SEED]``: the demo's recipe for ``KIND`` (512 images, 1,200 steps at batch
64, v-prediction, training seed 0 or ``SEED``, CPU) with a 4-head self-attention block after the middle block (``+attn``)
and/or a mixed-precision training step (``@bf16``). Each trains into ``RUN/variants/<variant>`` and
is scored as ``qhybrid compare`` scores the demo (64 samples, seed 1, 200 held-out images), so its
row compares with the demo report's row of the same kind. Training seconds are printed per variant
(one after another on the same machine; the demo's own models print the time the demo recorded); the
first variant of a run also pays for drawing the 512 training images, later ones reuse them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

# a sibling script: `python benchmarks/recipe_variants.py` puts benchmarks/ first on the path
from latent32_denoisers import print_table


def parse_variant(text: str) -> tuple[str, int, str, int]:
    """``KIND[+attn][@precision][%SEED]`` -> (kind, attention heads, precision, training seed)."""
    text, _, seed = text.partition("%")
    name, _, precision = text.partition("@")
    kind, _, extra = name.partition("+")
    if extra not in ("", "attn"):
        raise SystemExit(f"unknown variant part +{extra} in {text!r}; write KIND[+attn][@bf16|@fp16][%SEED]")
    if precision not in ("", "fp32", "bf16", "fp16") or (seed and not seed.isdigit()):
        raise SystemExit(f"cannot read the variant {text!r}; write KIND[+attn][@bf16|@fp16][%SEED]")
    return kind, 4 if extra else 0, precision or "fp32", int(seed or 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--variants", default="classical-large@bf16,hybrid@bf16,classical+attn,hybrid+attn")
    parser.add_argument("--steps", type=int, default=1200)
    args = parser.parse_args()
    from qhybrid.models.checkpoint import read_header
    from qhybrid.models.denoiser import DenoiserConfig
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion
    from qhybrid.workflows.compare import run_compare

    demo = json.loads((args.run / "demo.json").read_text()) if (args.run / "demo.json").exists() else {}
    latent = read_header(args.run / "vae", "vae")["config"]
    rows = []
    for text in ["demo", *args.variants.split(",")]:
        if text == "demo":  # the demo's own models, as its compare stage scored them
            result = json.loads((args.run / "comparison.json").read_text())
            for kind, entry in result["models"].items():
                seconds = demo.get("timings_seconds", {}).get(f"ldm-{kind}")
                rows.append((f"{kind} (demo)", seconds, entry["metrics"]))
            continue
        kind, heads, precision, seed = parse_variant(text)
        folder = args.run / "variants" / text.replace("@", "-").replace("+", "-").replace("%", "-seed")
        folder.mkdir(parents=True, exist_ok=True)
        for part in ("vae", "encoder", "validator"):
            if not (folder / part).exists():
                shutil.copytree(args.run / part, folder / part)
        cfg = DenoiserConfig.for_kind(kind, latent.get("latent_channels", 4), latent["latent_size"]).replace(
            attention_heads=heads)
        seconds = None  # trained by an earlier run of this script: not timed
        if not (folder / f"ldm-{kind}" / "config.json").exists():
            t0 = time.perf_counter()
            train_diffusion(folder / f"ldm-{kind}", folder / "vae", kind,
                            DiffusionTrainConfig(n=512, steps=args.steps, batch=64, seed=seed), config=cfg,
                            progress=False, device="cpu", precision=precision)
            seconds = time.perf_counter() - t0
            print(f"{text}: trained in {seconds:.0f} s", flush=True)
        result = run_compare(folder, n=64, steps=50, seed=1, real_n=200, progress=False, contribution=None)
        rows.append((text, seconds, result["models"][kind]["metrics"]))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
