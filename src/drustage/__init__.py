"""drustage: Luk DRU skeletal maturity from hand radiographs.

Subpackages: ``data`` (layout, label sheets, boxes, splits, crops), ``synth`` (phantom
generator), ``models`` (spec-string classifiers, detector), ``training`` (loops, checkpoints).
"""

__version__ = "0.1.0"
