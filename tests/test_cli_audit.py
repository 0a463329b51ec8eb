"""A representative subset of the CLI audit (benchmarks/cli_audit.py) as real ``qhybrid`` runs: bad
input exits 2 and a runtime failure 1, with one 'qhybrid: error' line naming the problem, no traceback."""

import sys
from pathlib import Path

import pytest
from cli_helpers import one_line_error, run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import cli_audit  # noqa: E402

SUBSET = [
    # argparse types (fast)
    "train vae: --lr 0",
    "train diffusion: --lr -1",
    "sample: --eta -1",
    "sample: --eta 5",
    "demo: --out is a file",
    "data show: --out is a folder",
    "evaluate: --json is a folder",
    "jobs list: --jobs-dir is a file",
    "jobs submit: --resilience-level 5",
    "circuits study: --reps 0",
    "noisy-eval: --seed -1",
    # the library's checks
    "data show: checkpoint folder as the source",
    "train diffusion: --qubits 100 (too many)",
    "train diffusion: --ansatz nope",
    "train diffusion: --vae is an LDM checkpoint",
    "sample: --model with truncated model.safetensors",
    "sample: --steps 100000 (more than the model's timesteps)",
    "sample: --target fake: on a classical model",
    "noisy-eval: --model with broken config.json",
    "circuits inspect: --spec is a folder",
    "circuits study: --backends '' (none)",
    "compare: --validator is a VAE (encoder trained otherwise)",
    "validator score: text file as the image",
    "jobs status: record is not JSON",
    "jobs cancel: unknown run id",
    "jobs submit: --max-qpu-seconds below the estimate (refused before anything is written)",
    # runtime failures while a progress bar is open: the error still gets a line of its own
    "train vae: --out below a file (fails at the first save, progress bar open)",
]


@pytest.fixture(scope="module")
def audit_cases(tiny_models, tmp_path_factory):
    paths = cli_audit.make_inputs(tmp_path_factory.mktemp("audit"), models=tiny_models)
    return {case.id: case for case in cli_audit.cases(paths)}


@pytest.mark.parametrize("case_id", SUBSET)
def test_bad_input_gets_one_line(audit_cases, case_id):
    case = audit_cases[case_id]
    line = one_line_error(run(*case.args), code=case.code)
    for expected in case.expect:
        assert expected.lower() in line.lower(), (case_id, line)


def test_the_audit_covers_every_subcommand(audit_cases):
    """A new subcommand needs audit cases (benchmarks/cli_audit.py) before it ships."""
    from qhybrid.cli import build_parser

    def leaves(parser, prefix=()):
        sub = next((a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"), None)
        if sub is None:
            yield " ".join(prefix)
            return
        for name, child in sub.choices.items():
            yield from leaves(child, (*prefix, name))

    audited = {case.command for case in audit_cases.values()}
    missing = sorted(set(leaves(build_parser())) - audited)
    assert not missing, f"subcommands without a case in benchmarks/cli_audit.py: {missing}"
