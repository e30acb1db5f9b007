"""README's two set-up commands stay true: CI runs exactly README's install + test command."""
from __future__ import annotations

import re

from conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_readme_opens_with_two_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("actionkit demo")
    assert "pytest" in cmds[1]


def test_ci_runs_readme_install_and_test_commands():
    install, test = (part.strip() for part in _readme_commands()[1].split("&&"))
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    assert install in ci
    assert test in ci


def test_console_command_lists_every_job():
    from actionkit.cli import COMMANDS, resolve

    for name in ("train", "test", "eval-ava", "make-synthetic", "demo", "lfb", "benchmark",
                 "convert-proposals", "convert-lfb"):
        assert name in COMMANDS
        module, func, _ = COMMANDS[name]
        assert module.startswith("actionkit.")
        assert callable(resolve(name)), name
