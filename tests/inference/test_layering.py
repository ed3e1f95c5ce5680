"""The inference layer, the pipeline, the outputs, the DICOM node, the Ray engine and the service never
import training code, even lazily."""

from __future__ import annotations

import ast
from pathlib import Path

import drustage

PACKAGE = Path(drustage.__file__).parent
PREDICTION_SIDE = [*sorted((PACKAGE / "inference").glob("*.py")), *sorted((PACKAGE / "data").glob("*.py")),
                   PACKAGE / "pipeline.py", PACKAGE / "batch.py", *sorted((PACKAGE / "service").glob("*.py")),
                   PACKAGE / "viz.py", PACKAGE / "gradcam.py", *sorted((PACKAGE / "evaluation").glob("*.py")),
                   *sorted((PACKAGE / "outputs").glob("*.py")),
                   *sorted((PACKAGE / "pacs").glob("*.py")), PACKAGE / "scale.py"]


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in the file names (function bodies too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_prediction_side_modules_import_nothing_from_training():
    offenders = {path.relative_to(PACKAGE).as_posix(): sorted(m for m in imported_modules(path)
                                                               if m.startswith("drustage.training"))
                 for path in PREDICTION_SIDE}
    assert not {name: found for name, found in offenders.items() if found}


def test_the_check_sees_lazy_imports(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from drustage.training.detector import train_detector\n")
    assert "drustage.training.detector" in imported_modules(module)
