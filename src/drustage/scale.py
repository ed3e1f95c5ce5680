"""Archive-scale prediction on Ray Data: ``drustage predict ... --engine ray [--ray-address ADDR]``.

Ray Data carries the inputs (paths, expanded from folders and DICOM series on the driver) to a pool
of model actors, each of which loads the bundle once and runs ``batch.predict_file`` (the same
outputs, written atomically per item, as the local path). An input whose ``<stem>.json`` already
exists is not read again, so an interrupted run resumes where it stopped; a bad item is reported
and the run goes on. Without an address a local Ray is started; with one the run joins a cluster.
Besides ``summary.csv`` the run writes ``summary.parquet``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RayConfig", "predict_with_ray"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayConfig:
    actors: int = 2  # model actors (each holds one copy of the bundle)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    address: str | None = None  # a cluster to join; None starts a local Ray
    object_store_bytes: int = 256 << 20  # of a local Ray: inputs travel as paths, so little is needed


def _done_with(result: Path, fingerprint: str) -> bool:
    """Whether ``result`` holds a finished reading by this bundle (a result of another bundle is redone)."""
    try:
        return json.loads(result.read_text()).get("model_fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


class _Reader:
    """A Ray actor: one predictor, reused for every batch it is given."""

    def __init__(self, source: str, settings: dict, out: str, options):
        from drustage.inference.bundle import load_bundle
        from drustage.pipeline import Predictor

        self.predictor = Predictor(load_bundle(source), **settings)
        self.out = Path(out)
        self.options = options

    def __call__(self, batch: dict) -> dict:
        from drustage.io_utils import printable
        from drustage.batch import predict_file

        reports, errors = [], []
        for path, stem in zip(batch["path"], batch["stem"]):
            try:
                reports.append(json.dumps(predict_file(self.predictor, Path(path), stem, self.out, self.options)))
                errors.append("")
            except (ValueError, OSError) as error:  # one bad item: reported, the run goes on
                reports.append("")
                errors.append(printable(str(error)))
        return {"path": batch["path"], "report": reports, "error": errors}


def predict_with_ray(predictor, paths: list[Path], out: str | Path, config: RayConfig = RayConfig(),
                     options=None, progress: bool = True) -> tuple[list[dict], list[str]]:
    """Like ``batch.predict_files`` (reports in input order, one-line failures), on Ray actors
    built from ``predictor``'s bundle and settings; ``progress`` False keeps Ray Data's progress
    lines and INFO logs quiet."""
    import pandas as pd
    import ray

    from drustage.batch import OutputOptions, unique_stems, summary_rows, write_summary

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options = options or OutputOptions()
    stems = unique_stems(paths)
    fingerprint = predictor.bundle.fingerprint
    todo = [(str(path), stem) for path, stem in zip(paths, stems) if not _done_with(out / f"{stem}.json", fingerprint)]
    log.info("%d of %d input(s) already done; %d to read", len(paths) - len(todo), len(paths), len(todo))
    started = not ray.is_initialized()
    if started:
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.INFO if progress else logging.WARNING,
                 object_store_memory=None if config.address else config.object_store_bytes)
    ray.data.DataContext.get_current().enable_progress_bars = progress
    logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.WARNING)
    outcomes: dict[str, dict] = {}
    try:
        if todo:
            settings = {**predictor.settings, "threads": max(1, int(config.cpus_per_actor))}
            items = ray.data.from_items([{"path": path, "stem": stem} for path, stem in todo])
            done = items.map_batches(_Reader, batch_size=1, compute=ray.data.ActorPoolStrategy(size=config.actors),
                                     num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor or None,
                                     fn_constructor_args=(str(predictor.bundle.source), settings, str(out), options))
            outcomes = {row["path"]: row for row in done.iter_rows()}
    finally:
        if started:
            ray.shutdown()
    reports, failures = [], []
    for path, stem in zip(paths, stems):
        row = outcomes.get(str(path))
        if row is None:  # done by an earlier run
            reports.append(json.loads((out / f"{stem}.json").read_text()))
        elif row["error"]:
            failures.append(row["error"])
        else:
            reports.append(json.loads(row["report"]))
    write_summary(out, reports)
    pd.DataFrame(summary_rows(reports)).to_parquet(out / "summary.parquet.tmp", index=False)
    (out / "summary.parquet.tmp").replace(out / "summary.parquet")
    return reports, failures
