import subprocess
import sys

import pytest

from ldetok_lite.cli import main
from ldetok_lite.config import ConfigError
from ldetok_lite.io import parse_overrides, parse_value
from ldetok_lite.notebook import check_parameters


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ldetok_lite.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_unknown_preset_is_one_line_error(root):
    r = run_cli("run", "00", "--preset", "tiy", "--out", "unused", cwd=root)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.startswith("ldetok-lite: error: unknown preset 'tiy'") and "tiny" in err and "\n" not in err


def test_unknown_and_mistyped_notebook_parameter(root, tmp_path):
    r = run_cli("run", "00", "--preset", "smoke", "--out", str(tmp_path), "-p", "devise", "cpu", cwd=root)
    assert r.returncode == 2
    assert "unknown parameter 'devise'" in r.stderr and "did you mean 'device'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("run", "00", "--preset", "smoke", "--out", str(tmp_path), "-p", "interactive", "yes", cwd=root)
    assert r.returncode == 2 and "headless runs are never interactive" in r.stderr and "--interactive" not in r.stderr


def test_missing_data_dir_is_one_line_error(root, tmp_path):
    r = run_cli("run", "00", "--preset", "smoke", "--out", str(tmp_path), "-p", "data_dir", str(tmp_path / "nope"),
                cwd=root)
    assert r.returncode == 2
    assert "data_dir" in r.stderr and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unknown_notebook_name(root, tmp_path, capsys):
    assert main(["run", "does_not_exist", "--preset", "smoke", "--out", str(tmp_path)]) == 2
    assert "matches no notebook" in capsys.readouterr().err


def test_failing_notebook_stops_with_name_and_cell(root, tmp_path, capsys):
    import nbformat

    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('preset = "smoke"\nseed = 0\nout_dir = ""\ninteractive = True')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise RuntimeError('boom')"),
                nbformat.v4.new_code_cell("y = 2")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(nb, path)
    code = main(["run", str(path), "--preset", "smoke", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "99_broken failed at cell" in err and "RuntimeError: boom" in err
    assert (tmp_path / "out" / "99_broken.ipynb").exists()  # the executed copy shows the traceback


def test_one_set_grammar():
    """One grammar for every --set, -p and the overrides notebook parameter (io.parse_value)."""
    assert parse_value("True") is True and parse_value("true") is True and parse_value("None") is None
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("cpu") == "cpu"
    assert parse_value("[1, 2.5]") == [1, 2.5] and parse_value("'3'") == "3"
    assert parse_overrides(["tokenizer.gamma=2", "eval.cfg_scales=[1, 2]"]) == {"tokenizer.gamma": 2,
                                                                              "eval.cfg_scales": [1, 2]}
    assert parse_overrides("a.b=True c.d=[1, 2]; e.f=x") == {"a.b": True, "c.d": [1, 2], "e.f": "x"}
    with pytest.raises(ValueError, match="group.key=value"):
        parse_overrides(["gamma"])


def test_notebook_setup_rejects_unknown_wrong_type_and_range():
    with pytest.raises(ConfigError, match=r"unknown notebook parameter 'tua'.*did you mean 'tau'"):
        check_parameters({"tua": 0.5}, extra={"tau": float})
    with pytest.raises(ConfigError, match=r"seed='1' must be int"):
        check_parameters({"seed": "1"})
    with pytest.raises(ConfigError, match=r"preset='huge' is not allowed"):
        check_parameters({"preset": "huge"})
    assert check_parameters({"tau": 1}, extra={"tau": float}) == {"tau": 1.0}


def test_doctor_and_presets(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "widgets" in out and "offline assets" in out
    assert main(["presets"]) == 0
    assert "smoke" in capsys.readouterr().out


def test_train_tokenizer_warm_starts_from_its_own_plain_ae(tmp_path, capsys):
    """At smoke/tiny (tokenizer.warm_start=plain) `train tokenizer` trains the plain AE into OUT/warm_start
    first; `--set tokenizer.warm_start=none` trains from scratch."""
    from ldetok_lite import checkpoint as ckpt

    small = ["--preset", "smoke", "--set", "data.num_train=32", "--set", "tokenizer_train.steps=2",
             "--set", "tokenizer_train.batch_size=8", "--device", "cpu"]
    assert main(["train", "tokenizer", "--out", str(tmp_path / "a"), *small]) == 0
    out = capsys.readouterr().out
    assert "warm start (tokenizer.warm_start=plain)" in out
    base = ckpt.latest_checkpoint(tmp_path / "a" / "warm_start")
    assert base is not None and f"initialised from {base}" in out
    assert main(["train", "tokenizer", "--out", str(tmp_path / "b"), *small,
                 "--set", "tokenizer.warm_start=none"]) == 0
    assert "warm start" not in capsys.readouterr().out and not (tmp_path / "b" / "warm_start").exists()
