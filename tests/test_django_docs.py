"""docs/django.md's quick start runs as written: its settings block and its
``@on_writer`` block, in a fresh process (Django is configured once per process),
with the example project's app."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "django.md"

CHILD = r"""
import sys, threading
from pathlib import Path
sys.path.insert(0, {example!r})
BASE_DIR = Path({base!r})
settings_block, code_block = {blocks!r}
exec(settings_block)  # DATABASES
import django
from django.conf import settings
settings.configure(DATABASES=DATABASES, INSTALLED_APPS=["counter"], USE_TZ=True,
                   DEFAULT_AUTO_FIELD="django.db.models.BigAutoField")
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
exec(code_block)  # record_view
threads = [threading.Thread(target=record_view, args=("home", float(i))) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join(60)
record_view("home", 9.0)
from counter.models import Page, View
print(Page.objects.get(name="home").views, View.objects.count())
"""


def quick_start_blocks() -> list[str]:
    section = DOC.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    blocks = quick_start_blocks()
    assert len(blocks) == 2
    code = CHILD.format(example=str(ROOT / "examples" / "django_counter"),
                        base=str(tmp_path), blocks=tuple(blocks))
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    assert done.returncode == 0, done.stdout
    assert done.stdout.split()[-2:] == ["9", "9"]  # nine views counted, nine logged


def test_the_readme_settings_block_runs_as_written(tmp_path: Path) -> None:
    """README's Django section: its DATABASES block, with the docs' @on_writer code."""
    section = (ROOT / "README.md").read_text().split("### Django", 1)[1].split("\n## ", 1)[0]
    settings_block = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    code = CHILD.format(example=str(ROOT / "examples" / "django_counter"),
                        base=str(tmp_path), blocks=(settings_block, quick_start_blocks()[1]))
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    assert done.returncode == 0, done.stdout
    assert done.stdout.split()[-2:] == ["9", "9"]
