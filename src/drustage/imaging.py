"""Radiograph loading: PNG, JPEG, TIFF (8/16-bit) and DICOM into a float32 image in [0, 1].

``load_radiograph(path)`` is the one entry point. It never copies a patient-identifying DICOM
attribute: ``RadiographMeta`` holds only geometry and acquisition facts.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from drustage.io_utils import printable

__all__ = ["DetectorFrame", "Radiograph", "RadiographError", "RadiographMeta", "dicom_patient_sex_age", "downscale",
           "exposed_region", "image_size", "is_dicom", "load_radiograph"]

# Largest image accepted, in pixels: real hand radiographs are under 20 Mpx; this stops
# decompression bombs long before memory runs out.
MAX_PIXELS = 80_000_000
# Longest side over shortest: a hand film is under 2; a 16000x32 strip costs gigabytes downstream.
MAX_ASPECT = 8.0
# A deflated DICOM may inflate to at most this many bytes (the pixel limit at 16 bits, plus headers).
MAX_INFLATED_BYTES = 2 * MAX_PIXELS + (16 << 20)
_DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC_END = _DICOM_MAGIC_OFFSET + 4  # bytes to read to see the DICOM magic


class RadiographError(ValueError):
    """A radiograph could not be read; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = printable(" ".join(str(problem).split()))  # one line, whatever a decoder said
        super().__init__(f"{printable(self.path)}: {self.problem}")


@dataclass(frozen=True)
class RadiographMeta:
    source: str  # file name only, never a directory that could identify a site or patient
    format: str  # "png", "jpeg", "tiff", "dicom", ...
    original_size: tuple[int, int]  # (height, width) in pixels
    bit_depth: int
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column)
    laterality: str | None = None  # "L" or "R" when the file says so
    photometric: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Radiograph:
    image: np.ndarray  # float32, (H, W), 0 = black (air), 1 = white (bone)
    meta: RadiographMeta


def has_dicom_magic(head: bytes) -> bool:
    """True when a file's first bytes carry the DICOM preamble magic ``DICM`` at byte 128."""
    return head[_DICOM_MAGIC_OFFSET:DICOM_MAGIC_END] == b"DICM"


def is_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return has_dicom_magic(handle.read(DICOM_MAGIC_END))


def load_radiograph(path: str | Path) -> Radiograph:
    """Read a radiograph as float32 in [0, 1] plus metadata.

    DICOM is detected by content (not extension); rescale slope/intercept and the VOI LUT or
    window are applied and MONOCHROME1 is inverted. Other formats go through Pillow; 16-bit
    images without a window are stretched between their 0.5th and 99.5th percentiles.
    Raises ``RadiographError`` (a ``ValueError``) with a one-line message naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise RadiographError(path, "no such file")
    if path.is_dir():
        raise RadiographError(path, "is a directory, not an image file")
    if path.stat().st_size == 0:
        raise RadiographError(path, "empty file")
    try:
        if is_dicom(path):
            return _load_dicom(path)
        return _load_pillow(path)
    except RadiographError:
        raise
    except MemoryError:
        raise RadiographError(path, "image too large to load") from None
    except Exception as error:  # any decoder failure becomes one clear line
        raise RadiographError(path, f"cannot decode image ({type(error).__name__}: {error})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a radiograph from its header, without decoding the pixels; raises
    ``RadiographError`` when the file is not an image."""
    path = Path(path)
    try:
        if is_dicom(path):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
            return int(ds.Rows), int(ds.Columns)
        from PIL import Image

        with Image.open(path) as image:
            return image.size[1], image.size[0]
    except Exception as error:
        raise RadiographError(path, f"cannot read the image size ({type(error).__name__}: {error})") from None


def _check_size(path: Path, height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise RadiographError(path, f"zero-size image ({width}x{height})")
    if height * width > MAX_PIXELS:
        raise RadiographError(
            path, f"image of {width}x{height} pixels exceeds the {MAX_PIXELS:,}-pixel limit"
        )
    if min(height, width) < 32:
        raise RadiographError(path, f"image of {width}x{height} pixels is too small for a radiograph")
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise RadiographError(path, f"image of {width}x{height} pixels is a strip (sides more than "
                                    f"{MAX_ASPECT:g} to 1), not a radiograph")


def _check_finite(path: Path, values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise RadiographError(path, "pixel values include NaN or infinity")


def window_percentiles(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    lo, hi = np.percentile(values, [low, high])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, np.float32)
    return np.clip((values.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


# A film whose exposed area (what is brighter than its darkest 2% of range, as a rectangle) covers
# less than this share of the frame is cropped to it before detection: scanned small films padded
# into large black frames showed the wrist at a quarter of its usual size, and the detector boxed
# both bones as one (4 of the 777 shared films, 3 of them in the held-out test part).
EXPOSED_CROP_SHARE = 0.6
EXPOSED_LEVEL = 0.02  # of the film's range above its minimum: brighter is exposed
EXPOSED_MARGIN = 0.02  # of the exposed rectangle's sides, kept around it


@dataclass(frozen=True)
class DetectorFrame:
    """Where the detector's pixels lie in the original image: the top-left corner of the region
    it sees (original pixels) and its pixels per original pixel."""

    scale: float
    left: int = 0
    top: int = 0

    def to_detector(self, box: tuple[float, ...]) -> tuple[float, ...]:
        """An original-pixel box in the detector's pixels."""
        x1, y1, x2, y2 = box
        return tuple(v * self.scale for v in (x1 - self.left, y1 - self.top, x2 - self.left, y2 - self.top))

    def to_original(self, box: tuple[float, ...], shape: tuple[int, ...]) -> tuple[float, ...]:
        """A detector box in the original image's pixels, clipped to its ``shape``: the downscaled
        size is rounded, so a box at its edge can map back past the image by a pixel."""
        x1, y1, x2, y2 = (float(v) / self.scale for v in box)
        height, width = shape[:2]
        return (min(x1 + self.left, width), min(y1 + self.top, height), min(x2 + self.left, width),
                min(y2 + self.top, height))


def exposed_region(image: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns of the film's exposed rectangle (with a margin), or the whole frame
    when that covers at least ``EXPOSED_CROP_SHARE`` of it."""
    low, high = float(image.min()), float(image.max())
    exposed = image > low + EXPOSED_LEVEL * (high - low)
    rows, cols = np.flatnonzero(exposed.any(1)), np.flatnonzero(exposed.any(0))
    whole = (slice(0, image.shape[0]), slice(0, image.shape[1]))
    if not len(rows):
        return whole
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if (bottom - top) * (right - left) >= EXPOSED_CROP_SHARE * image.size:
        return whole
    pad_y, pad_x = round(EXPOSED_MARGIN * (bottom - top)), round(EXPOSED_MARGIN * (right - left))
    return (slice(max(top - pad_y, 0), min(bottom + pad_y, image.shape[0])),
            slice(max(left - pad_x, 0), min(right + pad_x, image.shape[1])))


def downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, DetectorFrame]:
    """What the detector sees of a film: its exposed region (``exposed_region``) as an
    antialiased uint8 copy with the longer side at most ``max_side``, contrast stretched between
    the 0.5th and 99.5th percentiles; with the frame that maps its boxes back. Training and
    inference both go through here so the detector sees the same framing, resampling and contrast
    whatever the film."""
    from PIL import Image

    rows, cols = exposed_region(image)
    region = image[rows, cols]
    scale = min(1.0, max_side / max(region.shape))
    pil = Image.fromarray((window_percentiles(region) * 255 + 0.5).astype(np.uint8))
    if scale < 1.0:
        pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.Resampling.BILINEAR)
    return np.asarray(pil), DetectorFrame(scale, cols.start, rows.start)


def is_dicom_without_preamble(head: bytes) -> bool:
    """Whether a file's first bytes are a DICOM stream written without its 128-byte preamble: a
    group 0002 or 0008 element in explicit VR little endian (tag, then a two-letter VR)."""
    return len(head) >= 6 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[4:6].isalpha() and head[4:6].isupper()


def _check_jpeg_scan(path: Path) -> None:
    """Pillow decodes a JPEG with corrupt entropy-coded data silently (garbled rows); libjpeg
    (the DICOM JPEG codec, already a dependency) refuses it, so it checks each JPEG once."""
    from libjpeg import decode

    try:
        decode(path.read_bytes())
    except (RuntimeError, ValueError) as error:
        raise RadiographError(path, f"corrupt JPEG data ({error})") from None


def _load_pillow(path: Path) -> Radiograph:
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(path)
        except UnidentifiedImageError:
            with open(path, "rb") as handle:
                head = handle.read(6)
            if is_dicom_without_preamble(head):
                return _load_dicom(path, force=True)
            raise RadiographError(path, "not an image (unrecognised format)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise RadiographError(path, "image exceeds the decompression-bomb pixel limit") from None
    with opened as image:
        width, height = image.size
        _check_size(path, height, width)
        if getattr(image, "n_frames", 1) > 1:
            raise RadiographError(path, f"multi-frame image ({image.n_frames} frames); expected one")
        fmt = (image.format or path.suffix.lstrip(".")).lower()
        try:
            image.load()
        except OSError as error:
            raise RadiographError(path, f"truncated or corrupt image data ({error})") from None
        if fmt == "jpeg":
            _check_jpeg_scan(path)
        mode = image.mode
        if mode == "1":
            raise RadiographError(path, "1-bit (black and white) image: a radiograph needs grey levels")
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            raw = np.asarray(image)
            bit_depth = 16 if mode.startswith("I;16") else 32
            _check_finite(path, raw)
            pixels = window_percentiles(raw)
        else:
            if mode != "L":
                image = image.convert("L")
            raw = np.asarray(image)
            bit_depth = 8
            pixels = raw.astype(np.float32) / 255.0
    meta = RadiographMeta(
        source=path.name,
        format=fmt,
        original_size=(height, width),
        bit_depth=bit_depth,
        photometric="MONOCHROME2",
    )
    return Radiograph(np.ascontiguousarray(pixels, dtype=np.float32), meta)


def _check_inflated_size(path: Path) -> None:
    """Refuse a deflated DICOM that inflates past ``MAX_INFLATED_BYTES``, counted in a stream
    before pydicom inflates it all into memory."""
    import zlib

    from pydicom.filereader import read_preamble, _read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    with open(path, "rb") as handle:
        try:
            read_preamble(handle, force=True)
            meta = _read_file_meta_info(handle)
        except Exception:  # no readable file meta: pydicom's own reading reports it
            return
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while block := handle.read(1 << 20):
            try:
                total += len(inflater.decompress(block, MAX_INFLATED_BYTES + 1 - total))
            except zlib.error as error:
                raise RadiographError(path, f"corrupt deflated DICOM ({error})") from None
            while inflater.unconsumed_tail and total <= MAX_INFLATED_BYTES:
                total += len(inflater.decompress(inflater.unconsumed_tail, MAX_INFLATED_BYTES + 1 - total))
            if total > MAX_INFLATED_BYTES:
                raise RadiographError(path, f"deflated DICOM inflates past the {MAX_INFLATED_BYTES >> 20} MiB limit")


def _check_pixel_data_length(path: Path, ds) -> None:
    """Uncompressed pixel data must hold what Rows x Columns x samples x bits say (else the image
    would be read garbled, or silently cut)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        return
    expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                * int(ds.get("BitsAllocated", 16) or 16) + 7) // 8
    actual = len(ds.PixelData)
    if actual not in (expected, expected + 1):  # odd lengths are padded to even
        raise RadiographError(path, f"DICOM pixel data holds {actual} bytes, but Rows, Columns and BitsAllocated "
                                    f"need {expected}")


def _pixel_spacing(ds) -> tuple[float, float] | None:
    """(row, column) spacing in mm when the file gives two positive finite values, else None."""
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        row, column = (float(v) for v in spacing)
    except (TypeError, ValueError):
        return None
    return (row, column) if all(np.isfinite(v) and v > 0 for v in (row, column)) else None


def _load_dicom(path: Path, force: bool = False) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    _check_inflated_size(path)
    try:
        ds = pydicom.dcmread(path, force=force)
    except InvalidDicomError as error:
        raise RadiographError(path, f"invalid DICOM ({error})") from None
    if "PixelData" not in ds:
        raise RadiographError(path, "DICOM object has no image (no PixelData)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise RadiographError(path, f"multi-frame DICOM ({frames} frames); expected one image")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    _check_size(path, rows, cols)
    _check_pixel_data_length(path, ds)
    try:
        raw = ds.pixel_array
    except Exception as error:  # missing codec plugins, corrupt fragments
        syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
        name = syntax.name if syntax is not None else "unknown transfer syntax"
        raise RadiographError(path, f"cannot decode DICOM pixels ({name}): {error}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if raw.ndim == 3:  # colour secondary capture: luminance only
        pixels = window_percentiles(raw[..., :3].astype(np.float32) @ _LUMA)
    else:
        values = apply_modality_lut(raw, ds).astype(np.float32)
        _check_finite(path, values)  # e.g. a RescaleSlope of NaN
        pixels = _apply_dicom_window(values, ds)
    if photometric == "MONOCHROME1":
        pixels = 1.0 - pixels
    laterality = ds.get("ImageLaterality") or ds.get("Laterality")
    meta = RadiographMeta(
        source=path.name,
        format="dicom",
        original_size=(rows, cols),
        bit_depth=int(ds.get("BitsStored", ds.get("BitsAllocated", 16))),
        pixel_spacing_mm=_pixel_spacing(ds),
        laterality=str(laterality).upper() if laterality in ("L", "R", "l", "r") else None,
        photometric=photometric if photometric.startswith("MONOCHROME") else "MONOCHROME2",
    )
    return Radiograph(np.ascontiguousarray(pixels, dtype=np.float32), meta)


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _apply_dicom_window(values: np.ndarray, ds) -> np.ndarray:
    """VOI LUT sequence, else the first linear window (DICOM PS3.3 C.11.2.1.2), else percentiles."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds:
        lut = np.asarray(apply_voi_lut(values, ds, prefer_lut=True), np.float32)
        return window_percentiles(lut, 0.0, 100.0)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(np.atleast_1d(ds.WindowCenter)[0])
        width = max(float(np.atleast_1d(ds.WindowWidth)[0]), 1.0)
        return np.clip((values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5, 0.0, 1.0)
    return window_percentiles(values)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float image to 8-bit for display."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_uint16(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)


def dicom_patient_sex_age(path: str | Path) -> tuple[str | None, float | None]:
    """PatientSex (F/M) and PatientAge (``012Y``, ``030M``, ``008W``, ``100D``) in years of a DICOM
    file, for the plausibility checks only: never copied into metadata or results. (None, None)
    for other files, missing or malformed values."""
    import pydicom

    path = Path(path)
    if not is_dicom(path):
        return None, None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientSex", "PatientAge"])
    except (OSError, ValueError, pydicom.errors.InvalidDicomError):
        return None, None
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    age = str(ds.get("PatientAge", "") or "").strip().upper()
    years = None
    if len(age) == 4 and age[:3].isdigit() and age[3] in "DWMY":
        years = int(age[:3]) / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[age[3]]
    return (sex if sex in ("F", "M") else None), (years if years is not None and years <= 30 else None)
