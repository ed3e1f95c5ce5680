"""The code base stays clean under the project's ruff settings (pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    # the test extras install ruff beside this interpreter, which need not be on PATH
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    done = subprocess.run([ruff, "check", "src", "tests", "bench", "recipes"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for folder in ("bench", "recipes") for p in (ROOT / folder).glob("*.py")
                 if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_bench_and_recipe_script_starts(script):
    # --help after the imports: a missing module (e.g. a dependency the extras do not install) fails here
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-500:]
