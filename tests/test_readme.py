"""The README's quickstart runs as written."""

from __future__ import annotations

import re

from conftest import ROOT, run_python


def test_readme_quickstart_runs_as_written(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S)
    assert block, "no quickstart block"
    code = f"import os; os.chdir({str(tmp_path)!r})\n" + block.group(1)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "(('home', 800),) ('name', 'views')"
    assert lines[1] == "800"
    assert lines[2].startswith("refused: UNIQUE constraint failed")
    assert lines[3] == "[1, 1, 1]"
    assert lines[-1].startswith("after close: gateway is closed")


def test_ci_runs_the_readme_test_command():
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", text, re.S)
    test_command = next(c for c in commands if c.endswith("-m pytest"))
    assert test_command in (ROOT / ".ci" / "run").read_text()
