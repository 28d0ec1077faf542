"""Conventions every command shares: exit codes, stderr/stdout, errors, atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from camid import __version__
from camid.cli import main
from camid.device import device_description, resolve_device
from camid.errors import UsageError
from camid.home import camid_home
from camid.io.atomic import atomic_write


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"camid {__version__}"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for group in ("info", "exif", "dataset", "models"):
        assert group in out


def test_info_reports_home_device_threads(capsys, isolated_home):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["camid_home"] == str(isolated_home)
    assert info["device_auto"] == device_description(resolve_device("auto"))
    assert info["torch_threads"] >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["exif"], "Missing argument 'inputs'"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["exif", "x.jpg", "--format", "xml"], "'xml' is not one of"),
    ],
)
def test_usage_error_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_existing_output_names_the_flag_that_replaces_it(tmp_path, capsys):
    """The library refuses to replace (AlreadyExistsError); the CLI names the flag."""
    args = ["synth", "cameras", str(tmp_path / "c"), "--per-device", "2", "--flat", "0",
            "--size", "64x48", "--json"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cameras.csv already exists (use --force to replace it)" in err
    assert main([*args, "--force"]) == 0


def test_internal_error_exit_4_without_traceback(monkeypatch, capsys, tmp_path):
    def boom(*a, **k):
        raise RuntimeError("simulated failure\nsecond line")

    monkeypatch.setattr("camid.cli.info.collect_info", boom)
    assert main(["info"]) == 4
    err = capsys.readouterr().err
    assert "Error: internal error: RuntimeError: simulated failure" in err
    assert "CAMID_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("CAMID_DEBUG", "1")
    assert main(["info"]) == 4
    assert "Traceback" in capsys.readouterr().err


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("tpu:7")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_home_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CAMID_HOME", str(tmp_path / "h"))
    assert camid_home() == tmp_path / "h" and (tmp_path / "h").is_dir()
    monkeypatch.delenv("CAMID_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert camid_home() == tmp_path / "xdg" / "camid"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as tmp:
        tmp.write_bytes(b"half-writ")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    # the temporary file's private 0600 mode must not leak into the result
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_python_dash_m_entry_point():
    res = subprocess.run(
        [sys.executable, "-m", "camid", "--version"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and res.stdout.startswith("camid ")


_TORCH_PROBE = """
import sys
from camid.cli import main
rc = main(sys.argv[1:])
print("TORCH_LOADED" if "torch" in sys.modules else "TORCH_ABSENT", file=sys.stderr)
sys.exit(rc)
"""


@pytest.mark.parametrize(
    "args",
    [["--version"], ["--help"], ["exif", "{img}", "--json"], ["dataset", "summary", "{dir}"],
     ["exif", "--help"], ["identify", "--help"], ["train", "--help"], ["models", "list"],
     ["models", "list", "--json"]],
)
def test_commands_without_a_network_do_not_import_torch(tmp_path, args):
    """`import torch` alone costs seconds; commands that run no network must not pay it."""
    from tests.conftest import write_jpeg

    (tmp_path / "cam" / "lbl").mkdir(parents=True)
    img = write_jpeg(tmp_path / "cam" / "lbl" / "a.jpg")
    argv = [a.format(img=img, dir=tmp_path / "cam") for a in args]
    proc = subprocess.run(
        [sys.executable, "-c", _TORCH_PROBE, *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "TORCH_ABSENT" in proc.stderr


def test_ctrl_c_during_start_up_exits_130_without_traceback(monkeypatch, capsys):
    """An interrupt while the command modules are still importing is handled like later."""
    import importlib.abc

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "camid.cli.app":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "camid.cli.app", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    assert main(["--version"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "Interrupted."


def test_top_level_errors_show_control_characters_escaped(tmp_path, capsys):
    """A file name from evidence with an ESC sequence in an error that ends the command."""
    evil = tmp_path / "x\x1b]0;pwned\x07.csv"
    assert main(["dataset", "summary", str(evil)]) in (2, 3)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\u001b]0;pwned\\u0007" in err
