"""The web service: REST API for predictions, the reading page, and folder-backed labelling.

The bundle is loaded once. Model work runs in worker threads, outside the event loop, through
``inference_slots`` (a semaphore) so concurrent requests queue instead of oversubscribing the
CPU, and so Grad-CAM's hooks never see another request's forward pass. Requests name results and
labelling images only by ids looked up in the result store or the labelling index; no request text
reaches a file path. Uploaded file names and DICOM headers are never echoed or logged; of a DICOM
upload only the attributes its SR and SC must carry are kept (``outputs.dicom.source_reference``). With
a state folder, results survive restarts (``store.ResultStore``) and every prediction and label save
is written to an append-only audit log (``store.AuditLog``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
import threading
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import Body, FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from drustage.imaging import (
    DICOM_MAGIC_END,
    Radiograph,
    RadiographError,
    has_dicom_magic,
    is_dicom_without_preamble,
    load_radiograph,
    to_uint8,
)
from drustage.inference.bundle import load_bundle
from drustage.inference.device import DEFAULT_DEVICE
from drustage.service.guard import LOOPBACK_NAMES, Guard, GuardConfig
from drustage.service.store import AuditLog, ResultStore, StoredResult
from drustage.stages import BONES
from drustage.thresholds import DETECTION_THRESHOLD

RESULT_ID = r"^[0-9a-f]{32}$"
DISPLAY_MAX_SIDE = 1200
UPLOAD_NAME = "upload"
SNIFF_BYTES = DICOM_MAGIC_END  # the longest magic checked: DICOM's "DICM" at byte 128
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


@dataclass(frozen=True)
class ServiceConfig:
    model: Path
    label_dir: Path | None = None
    max_upload_bytes: int = 64 << 20
    detection_threshold: float = DETECTION_THRESHOLD
    review_detection_score: float | None = None  # None: the predictor's default
    max_results: int = 64  # predictions kept for the page, the overlay and crop endpoints (the retention limit)
    state_dir: Path | None = None  # results.sqlite and audit.jsonl; None: results in memory, no audit log
    inference_slots: int = 1
    runtime: str = "torch"
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES  # Host header names accepted
    token: str | None = None  # required of every request when set
    device: str = DEFAULT_DEVICE


def sniff_format(head: bytes) -> str | None:
    """The container format from a file's first bytes: png, jpeg, tiff, dicom, or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "dicom" if has_dicom_magic(head) or is_dicom_without_preamble(head) else None


def display_image(image: np.ndarray) -> tuple[np.ndarray, float]:
    """An 8-bit copy for browsers, long side at most ``DISPLAY_MAX_SIDE``."""
    from PIL import Image

    height, width = image.shape
    scale = min(1.0, DISPLAY_MAX_SIDE / max(height, width))
    pixels = Image.fromarray(to_uint8(image))
    if scale < 1.0:
        pixels = pixels.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                               Image.Resampling.LANCZOS)
    return np.asarray(pixels), scale


def png_bytes(image) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def scaled_report(report: dict, scale: float) -> dict:
    """The report with boxes in display pixels, for drawing on the display image."""
    scaled = {**report}
    for bone in BONES:
        box = report[bone]["box"]
        scaled[bone] = {**report[bone], "box": None if box is None else [v * scale for v in box]}
    return scaled


class Engine:
    """The loaded bundle and the results kept for follow-up requests."""

    def __init__(self, config: ServiceConfig):
        from drustage.pipeline import Predictor

        self.config = config
        self.bundle = load_bundle(config.model)
        self.predictor = Predictor(self.bundle, config.detection_threshold, runtime=config.runtime,
                                   review_detection_score=config.review_detection_score, device=config.device)
        self.slots = threading.BoundedSemaphore(config.inference_slots)
        state = config.state_dir
        self.results = ResultStore(None if state is None else state / "results.sqlite", config.max_results)
        self.audit = AuditLog(None if state is None else state / "audit.jsonl")

    def predict(self, radiograph: Radiograph, sha256: str, patient=None, client: str = "local",
                source: bytes | None = None) -> tuple[str, dict]:
        with self.slots:
            result, crops = self.predictor.predict_with_crops(radiograph, sha256, patient=patient)
        report = result.to_dict()
        report["source"] = UPLOAD_NAME
        display, scale = display_image(radiograph.image)
        result_id = uuid.uuid4().hex
        self.results.put(result_id, StoredResult(report, display, scale, crops, source))
        self.audit.record("predict", client, self.bundle.fingerprint, sha256, result_id=result_id,
                          needs_review=report["needs_review"])
        return result_id, report

    def result(self, result_id: str) -> StoredResult:
        stored = self.results.get(result_id)
        if stored is None:
            raise HTTPException(404, f"no prediction {result_id} (results are kept for the last "
                                     f"{self.config.max_results} uploads)")
        return stored

    def heatmaps(self, stored: StoredResult) -> dict[str, np.ndarray]:
        from drustage.gradcam import grad_cam

        with self.slots:
            return {bone: grad_cam(self.predictor.torch_classifier(bone), crop) for bone, crop in stored.crops.items()}

    def close(self) -> None:
        """Let go of the models and the result store. FastAPI caches facts about every endpoint
        function in module-level LRU caches, and the endpoints close over this engine, so an app
        that has shut down would otherwise keep its models (~40-90 MB) for the life of the process."""
        self.results.close()
        self.predictor = None

    def detect(self, image: np.ndarray) -> dict[str, list[float]]:
        with self.slots:
            found = self.predictor.detector(image)
        return {bone: list(d.box) for bone, d in found.items() if d.box is not None}


def client_of(config: ServiceConfig) -> str:
    """Who the audit log names: the access token's id (a hash prefix, never the token) when
    authentication is on, else the local user."""
    if config.token is None:
        return "local"
    return "token:" + hashlib.sha256(config.token.encode()).hexdigest()[:12]


def _links(result_id: str, dicom: bool = False) -> dict:
    base = f"/v1/predictions/{result_id}"
    outputs = {"structured_report": f"{base}/sr.dcm", "secondary_capture": f"{base}/sc.dcm"} if dicom else {}
    return {"self": base, "overlay": f"{base}/overlay.png", "image": f"{base}/image.png", **outputs,
            **{f"{bone}_crop": f"{base}/crops/{bone}.png" for bone in BONES}}


def _dicom_source(path: Path) -> bytes | None:
    """A DICOM upload's source reference for its SR and SC, or None when it cannot have them."""
    from drustage.outputs.dicom import dataset_bytes, not_a_hand_radiograph, read_source_header, source_reference

    try:
        header = read_source_header(path)
    except ValueError:  # the pixels were read; the result simply has no DICOM outputs
        return None
    return None if not_a_hand_radiograph(header) else dataset_bytes(source_reference(header))


def _load_upload(source, limit: int) -> tuple[Radiograph, str, bytes | None]:
    """Copy an uploaded file object to a server-named temporary file (size limit, known format
    checked from the first bytes) and load it; with a DICOM radiograph's source reference. Runs in
    a worker thread: it blocks on disk."""
    from drustage.io_utils import file_sha256

    with tempfile.TemporaryDirectory(prefix="drustage-upload-") as folder:
        target = Path(folder) / UPLOAD_NAME
        size = 0
        with open(target, "wb") as handle:
            while block := source.read(1 << 20):
                size += len(block)
                if size > limit:
                    raise HTTPException(413, f"upload is larger than the {limit >> 20} MiB limit")
                handle.write(block)
        if size == 0:
            raise HTTPException(400, "the uploaded file is empty")
        with open(target, "rb") as handle:
            kind = sniff_format(handle.read(SNIFF_BYTES))
        if kind is None:
            raise HTTPException(415, "not a PNG, JPEG, TIFF or DICOM file")
        try:
            radiograph = load_radiograph(target)
            return radiograph, file_sha256(target), _dicom_source(target) if kind == "dicom" else None
        except RadiographError as error:
            raise HTTPException(422, f"unreadable radiograph: {error.problem}") from None


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application; loads the bundle (and labelling folder) before returning."""
    from drustage.service.labelling import LabelStore, is_complete

    engine = Engine(config)
    store = LabelStore(config.label_dir) if config.label_dir is not None else None
    static = resources.files("drustage.service") / "static"
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        engine.close()

    app = FastAPI(title="drustage", version=_version(), docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Luk distal radius and ulna (DRU) skeletal maturity from hand radiographs: "
                              "decision support for scoliosis bracing, not a diagnosis.")
    app.state.engine = engine
    app.state.labels = store
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    # the API page's script and style are served from here, never from a CDN
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
    app.add_middleware(Guard, config=GuardConfig(allowed_hosts=config.allowed_hosts, token=config.token,
                                                 max_body_bytes=config.max_upload_bytes + (1 << 16)))

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="drustage API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "model": engine.bundle.fingerprint[:16], "runtime": config.runtime,
                "labelling": store is not None}

    @app.get("/v1/model")
    def model_info():
        manifest = engine.bundle.manifest
        return {"fingerprint": engine.bundle.fingerprint,
                "schemes": {bone: manifest[bone]["scheme"] for bone in BONES},
                "versions": manifest.get("versions", {})}

    @app.post("/v1/predictions", status_code=201)
    async def create_prediction(file: UploadFile = File(..., description="PNG, JPEG, TIFF or DICOM radiograph"),
                                sex: str | None = Form(None, description="F or M: checks the reading's plausibility"),
                                age_years: float | None = Form(None, description="age (bone or chronological)")):
        from drustage.growth import PatientInfo

        try:
            patient = PatientInfo(sex, age_years)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        radiograph, sha256, source = await run_in_threadpool(_load_upload, file.file, config.max_upload_bytes)
        result_id, report = await run_in_threadpool(engine.predict, radiograph, sha256,
                                                    patient if patient.known else None, client_of(config), source)
        return {"id": result_id, "links": _links(result_id, source is not None), **report}

    @app.get("/v1/predictions")
    def list_predictions(limit: int = Query(20, ge=1, le=500, description="newest first")):
        items = [{"id": result_id, "created": created, "links": _links(result_id),
                  **{bone: {k: report[bone][k] for k in ("found", "prediction", "phase", "confidence")}
                     for bone in BONES},
                  "guidance": (report["guidance"] or {}).get("rule"), "needs_review": report["needs_review"]}
                 for result_id, created, report in engine.results.recent(limit)]
        return {"count": len(items), "retention": config.max_results, "items": items}

    @app.get("/v1/predictions/{result_id}")
    def get_prediction(result_id: str = PathParam(pattern=RESULT_ID)):
        stored = engine.result(result_id)
        return {"id": result_id, "links": _links(result_id, stored.source is not None), **stored.report}

    @app.get("/v1/predictions/{result_id}/image.png", response_class=Response)
    def get_image(result_id: str = PathParam(pattern=RESULT_ID)):
        return Response(png_bytes(engine.result(result_id).display), media_type="image/png")

    @app.get("/v1/predictions/{result_id}/overlay.png", response_class=Response)
    def get_overlay(result_id: str = PathParam(pattern=RESULT_ID), gradcam: bool = Query(False)):
        from drustage.pipeline import StageReport
        from drustage.viz import render_overlay

        stored = engine.result(result_id)
        heatmaps = engine.heatmaps(stored) if gradcam else None
        picture = render_overlay(stored.display.astype(np.float32) / 255.0,
                                 StageReport.from_dict(scaled_report(stored.report, stored.display_scale)),
                                 stored.crops, heatmaps)
        return Response(png_bytes(picture), media_type="image/png")

    @app.get("/v1/predictions/{result_id}/{kind}.dcm", response_class=Response)
    def get_dicom_output(kind: Literal["sr", "sc"], result_id: str = PathParam(pattern=RESULT_ID)):
        """A DICOM upload's Structured Report or Secondary Capture, in the upload's study."""
        import pydicom

        from drustage import __version__
        from drustage.outputs.dicom import output_bytes, secondary_capture, structured_report
        from drustage.pipeline import StageReport
        from drustage.viz import render_overlay

        stored = engine.result(result_id)
        if stored.source is None:
            raise HTTPException(404, "no DICOM outputs: this result is not of a DICOM radiograph with a study")
        source = pydicom.dcmread(io.BytesIO(stored.source), force=True)
        try:
            if kind == "sr":
                dataset = structured_report(source, stored.report, __version__)
            else:
                picture = render_overlay(stored.display.astype(np.float32) / 255.0,
                                         StageReport.from_dict(scaled_report(stored.report, stored.display_scale)),
                                         stored.crops)
                dataset = secondary_capture(source, np.asarray(picture), stored.report, __version__)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        return Response(output_bytes(dataset), media_type="application/dicom")

    @app.get("/v1/predictions/{result_id}/crops/{bone}.png", response_class=Response)
    def get_crop(bone: Literal["radius", "ulna"], result_id: str = PathParam(pattern=RESULT_ID),
                 gradcam: bool = Query(False)):
        from drustage.viz import heatmap_rgb

        stored = engine.result(result_id)
        if bone not in stored.crops:
            raise HTTPException(404, f"{bone} was not found on this radiograph")
        heat = engine.heatmaps(stored)[bone] if gradcam else None
        return Response(png_bytes(heatmap_rgb(stored.crops[bone], heat)), media_type="image/png")

    def labels() -> LabelStore:
        if store is None:
            raise HTTPException(404, "labelling is off: start the server with --label-dir FOLDER")
        return store

    def record_or_404(image_id: str):
        record = labels().records.get(image_id)
        if record is None:
            raise HTTPException(404, f"no image {image_id!r} in the labelling folder")
        return record

    def record_json(record) -> dict:
        return {"image_id": record.image_id, "file": record.file, "laterality": record.laterality,
                "stages": {bone: stage.code for bone, stage in record.stages.items()},
                "boxes": {bone: list(box) for bone, box in record.boxes.items()}, "complete": is_complete(record)}

    @app.get("/v1/labelling/items")
    def labelling_items(after: str | None = Query(None, description="image id: next_unlabelled comes after it")):
        items = [record_json(r) for r in labels().records.values()]
        return {"folder": labels().root.name, "count": len(items),
                "complete": sum(item["complete"] for item in items), "items": items,
                "next_unlabelled": labels().next_unlabelled(after)}

    async def load_labelling_image(image_id: str):
        record = record_or_404(image_id)
        try:
            return record, await run_in_threadpool(load_radiograph, labels().path_of(image_id))
        except RadiographError as error:
            raise HTTPException(422, f"{record.file}: {error.problem}") from None

    @app.get("/v1/labelling/items/{image_id}")
    async def labelling_item(image_id: str):
        record, radiograph = await load_labelling_image(image_id)
        proposed = None if record.boxes else await run_in_threadpool(engine.detect, radiograph.image)
        height, width = radiograph.image.shape
        return {**record_json(record), "width": width, "height": height, "proposed_boxes": proposed,
                "laterality_metadata": radiograph.meta.laterality,
                "next_unlabelled": labels().next_unlabelled(image_id)}

    @app.get("/v1/labelling/items/{image_id}/image.png", response_class=Response)
    async def labelling_image(image_id: str):
        _, radiograph = await load_labelling_image(image_id)
        display, _ = display_image(radiograph.image)
        return Response(png_bytes(display), media_type="image/png")

    @app.put("/v1/labelling/items/{image_id}")
    async def save_labels(image_id: str, body: dict = Body(..., examples=[{
            "stages": {"radius": "R7", "ulna": "U5"}, "laterality": "L",
            "boxes": {"radius": [385.8, 751.3, 476.0, 832.2], "ulna": [325.2, 763.8, 384.2, 818.8]}}])):
        from drustage.io_utils import file_sha256

        record_or_404(image_id)
        try:
            record = await run_in_threadpool(labels().save, image_id, dict(body.get("stages") or {}),
                                             dict(body.get("boxes") or {}), body.get("laterality") or None)
        except (ValueError, TypeError) as error:
            raise HTTPException(422, str(error)) from None
        sha256 = await run_in_threadpool(file_sha256, labels().path_of(image_id))
        engine.audit.record("label-save", client_of(config), engine.bundle.fingerprint, sha256,
                            stages={bone: stage.code for bone, stage in record.stages.items()})
        return {**record_json(record), "next_unlabelled": labels().next_unlabelled(image_id)}

    return app


def _version() -> str:
    from importlib.metadata import version

    return version("drustage")
