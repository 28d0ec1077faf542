"""Shell completion: `camid --show-completion SHELL`, `--install-completion SHELL`, and the
completion protocol itself (what a TAB press runs), all without importing torch."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI like the console script does and reports whether torch got imported. A TAB
# press (the _CAMID_COMPLETE protocol) ends inside click with sys.exit, so catch it here.
_PROBE = """
import sys
from camid.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code or 0
print("TORCH_LOADED" if "torch" in sys.modules else "TORCH_ABSENT", file=sys.stderr)
sys.exit(rc)
"""


def _camid(args: list[str], env_extra: dict[str, str] | None = None, home: Path | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("_CAMID_COMPLETE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if home is not None:
        env["HOME"] = str(home)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o default -F _camid_completion camid"), ("zsh", "#compdef camid"),
     ("fish", "complete --command camid")],
)
def test_show_completion_prints_the_named_shells_script(shell, marker):
    proc = _camid(["--show-completion", shell])
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout
    assert "_CAMID_COMPLETE" in proc.stdout  # the script calls camid back with this variable
    assert "TORCH_ABSENT" in proc.stderr


def test_show_completion_returns_from_main_in_process(capsys):
    """main() never raises: typer's sys.exit in the callback becomes a returned 0."""
    from camid.cli import main

    assert main(["--show-completion", "fish"]) == 0
    assert "complete --command camid" in capsys.readouterr().out


def test_show_completion_refuses_an_unknown_shell_as_a_usage_error():
    proc = _camid(["--show-completion", "tcsh"])
    assert proc.returncode == 2
    assert "tcsh" in proc.stderr and proc.stdout == ""


def test_a_tab_press_completes_commands_and_choices_without_torch():
    """What the installed script runs on TAB: camid with _CAMID_COMPLETE set."""
    proc = _camid([], {"_CAMID_COMPLETE": "complete_bash", "COMP_WORDS": "camid prnu m",
                       "COMP_CWORD": "2"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["match", "matrix"]
    assert "TORCH_ABSENT" in proc.stderr
    proc = _camid([], {"_CAMID_COMPLETE": "complete_bash",
                       "COMP_WORDS": "camid identify --format ", "COMP_CWORD": "3"})
    assert proc.stdout.split() == ["auto", "table", "json", "csv", "ndjson"]


def test_install_completion_bash_writes_the_script_and_sources_it(tmp_path):
    (tmp_path / ".bashrc").write_text("export KEEP=1\n")
    proc = _camid(["--install-completion", "bash"], home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / ".bash_completions" / "camid.sh"
    assert "_camid_completion" in script.read_text()
    rc = (tmp_path / ".bashrc").read_text()
    assert rc.startswith("export KEEP=1\n") and f"source '{script}'" in rc


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_bash_script_completes_in_a_real_bash(tmp_path):
    """End to end: source the printed script in bash and press TAB (call its function)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "camid"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m camid "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    script = _camid(["--show-completion", "bash"]).stdout
    (tmp_path / "camid.sh").write_text(script)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c",
         f"source '{tmp_path / 'camid.sh'}'; COMP_WORDS=(camid bias-check --q); COMP_CWORD=2; "
         '_camid_completion camid; printf "%s\\n" "${COMPREPLY[@]}"'],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["--quick", "--quiet"], proc.stderr
