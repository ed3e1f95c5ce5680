"""Metrics and reports: classification (``classification``), detection (``detection``) and
maturity on real films against the patients' ages (``maturity``)."""
