"""Every command in README.md's shell blocks is checked: `nbp` commands parse and their configs resolve (recipes
found, override keys and types valid) without running the job; scripts and files they name exist. The demo and
the test suite themselves run in CI and in test_demo.py."""
import re
import shlex
from pathlib import Path

import pytest

import nbp.cli
from nbp.cli import main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split(" #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


class Resolved(Exception):
    """Raised instead of running the job once its config has resolved."""


def test_readme_has_the_quick_start_first():
    assert readme_commands()[:2] == ["bash setup.sh && .venv/bin/nbp demo",
                                     "bash setup.sh --dev && .venv/bin/python -m pytest"]


@pytest.mark.parametrize("command", [c for c in readme_commands() if ".venv/bin/nbp " in c and "..." not in c])
def test_readme_nbp_command_resolves(command, monkeypatch):
    monkeypatch.chdir(ROOT)
    build_config = nbp.cli.build_config

    def resolve_only(*args, **kwargs):
        raise Resolved(build_config(*args, **kwargs))

    argv = shlex.split(command.split(".venv/bin/nbp ", 1)[1])
    if argv[0] == "config":  # cheap: runs for real
        assert main(argv) == 0
        return
    monkeypatch.setattr(nbp.cli, "build_config", resolve_only)
    with pytest.raises(Resolved):
        main(argv)


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith(("bash ", "python "))])
def test_readme_scripts_exist(command):
    words = shlex.split(command.split("&&")[0])
    script = ROOT / words[1]
    assert script.is_file(), f"README runs {words[1]}, which does not exist"
    for word in words[2:]:
        if word.endswith((".yaml", ".sh")):
            assert (ROOT / word).is_file(), f"README names {word}, which does not exist"
