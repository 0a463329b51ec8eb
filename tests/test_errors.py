"""Error text: parameter placeholders read as Python to library callers and as flags to CLI users;
one shortener and one redactor for every message qhybrid shows or saves."""

import pytest

from qhybrid.cli import flag_for
from qhybrid.errors import InputError, QHybridError, one_line, param, redact


def test_a_parameter_reads_as_python_and_renders_as_its_flag():
    exc = InputError(f"runs/x already holds a checkpoint; continue it with {param('resume', True)} or choose "
                     f"another {param('out')}; lower {param('real_n')} to {param('k', 3)}")
    assert str(exc) == ("runs/x already holds a checkpoint; continue it with resume=True or choose another out; "
                        "lower real_n to k=3")
    assert exc.render(flag_for) == ("runs/x already holds a checkpoint; continue it with --resume or choose another "
                                    "--out; lower --n-real to --k 3")
    assert exc.exit_code == 2 and isinstance(exc, ValueError)


def test_braces_in_paths_and_values_are_left_alone():
    exc = QHybridError("cannot write /tmp/{run}/x={y}; set {resume}")
    assert str(exc) == exc.render(flag_for) == "cannot write /tmp/{run}/x={y}; set {resume}"


def test_one_line_takes_the_first_line_adds_the_type_on_request_and_cuts():
    exc = RuntimeError("first line\nsecond line")
    assert one_line(exc) == "first line"
    assert one_line(exc, with_type=True) == "RuntimeError: first line"
    assert one_line(exc, with_type=True, limit=8) == "RuntimeE"
    assert one_line(KeyError()) == "KeyError"
    assert one_line("  already rendered\nmore") == "already rendered"


def test_secrets_are_blanked_before_the_line_is_cut(monkeypatch):
    token = "tok_" + "a1b2c3d4e5" * 4
    monkeypatch.setenv("QISKIT_IBM_TOKEN", token)
    text = f"401 Unauthorized for token {token} at instance crn:abcdefgh"
    assert redact(text, ["crn:abcdefgh"]) == "401 Unauthorized for token *** at instance ***"
    # cutting first would leave a prefix of the token on screen
    assert token[:12] not in one_line(RuntimeError(text), limit=40)
    assert redact("short secret abc", ["abc"]) == "short secret abc"  # too short to blank safely


@pytest.mark.parametrize("name, flag", [("resume", "--resume"), ("jobs_dir", "--jobs-dir"), ("n_boot", "--bootstrap"),
                                        ("out_dir", "--out"), ("optimization_level", "--opt-level")])
def test_flag_names(name, flag):
    assert flag_for(name) == flag
