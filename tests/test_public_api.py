"""The public API: every name in an ``__all__`` exists, and the README's Python example runs."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
PUBLIC = ["pipeline", "batch", "imaging", "growth", "stages", "inference.bundle", "inference.detector",
          "inference.classifier", "inference.device", "inference.checkpoints", "inference.onnx",
          "inference.crop_dataset", "data.detection", "data.augmentation", "evaluation.detection", "thresholds",
          "models.config", "training.config", "training.engine",
          "training.crop_sets", "training.objectives"]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_exists(name):
    module = importlib.import_module(f"drustage.{name}")
    assert module.__all__ and all(hasattr(module, item) for item in module.__all__)


def test_the_readme_python_example_runs(trained, capsys):
    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    image = sorted((trained[0] / "young" / "images").glob("*.png"))[0]
    code = code.replace('"runs/demo/bundle"', repr(str(trained[1]))).replace('"hand.png"', repr(str(image)))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    record = namespace["record"]
    assert record["radius"]["scheme"] == "phase4" and image.name in record["source"]
    assert capsys.readouterr().out.count("\n") == 2
