"""Radius and ulna boxes from COCO JSON, Pascal VOC XML and CSV, keyed by image file name.

All readers return ``{file_name: {bone: (x1, y1, x2, y2)}}`` in pixels; category/label names
are matched case-insensitively (``radius``, ``distal radius``, ``distal_radius``; same for ulna).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from drustage.data.layout import Box, DatasetError, checked_box
from drustage.stages import BONES, Bone

BoxTable = dict[str, dict[Bone, Box]]


def bone_of_label(label: str) -> Bone | None:
    words = label.strip().lower().replace("_", " ").replace("-", " ").split()
    for bone in BONES:
        if bone in words:
            return bone
    return None


def _box_from_text(values, where: str) -> Box:
    """Four coordinates written as text (CSV, XML) as a checked box."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: box coordinates must be numbers") from None
    return checked_box(numbers, None, None, where)


def _add(table: BoxTable, name: str, bone: Bone, box: Box, where: str) -> None:
    entry = table.setdefault(name, {})
    if bone in entry:
        raise DatasetError(f"{where}: more than one {bone} box for {name}")
    entry[bone] = box


def _coco_corners(bbox) -> list:
    """COCO's ``[x, y, width, height]`` as ``[x1, y1, x2, y2]`` (non-numbers left for checked_box to refuse)."""
    x, y, w, h = bbox
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y, w, h))
    return [x, y, x + w, y + h] if numeric else [x, y, w, h]


def read_coco(path: str | Path) -> BoxTable:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        categories = {c["id"]: c["name"] for c in data["categories"]}
        images = {i["id"]: i["file_name"] for i in data["images"]}
        annotations = data["annotations"]
    except FileNotFoundError:
        raise DatasetError(f"{path}: COCO file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DatasetError(f"{path}: not a COCO detection file ({type(error).__name__}: {error})") from None
    table: BoxTable = {}
    for ann in annotations:
        bone = bone_of_label(categories.get(ann.get("category_id"), ""))
        if bone is None:
            continue
        where = f"{path} annotation {ann.get('id')}"
        try:
            box = checked_box(_coco_corners(ann["bbox"]), None, None, where)
            name = Path(images[ann["image_id"]]).name
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, DatasetError):
                raise
            raise DatasetError(f"{where}: needs an image_id of the file and a bbox [x, y, width, height]") from None
        _add(table, name, bone, box, str(path))
    return table


def read_voc(path: str | Path) -> BoxTable:
    """One VOC XML file, or a folder of them."""
    import xml.etree.ElementTree as ET

    path = Path(path)
    files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
    if not files:
        raise DatasetError(f"{path}: no VOC .xml files")
    table: BoxTable = {}
    for file in files:
        try:
            root = ET.parse(file).getroot()
            name = Path(root.findtext("filename") or "").name
            if not name:
                raise DatasetError(f"{file}: VOC annotation has no <filename>")
            for obj in root.iter("object"):
                bone = bone_of_label(obj.findtext("name") or "")
                if bone is None:
                    continue
                bb = obj.find("bndbox")
                box = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
                _add(table, name, bone, _box_from_text(box, str(file)), str(file))
        except FileNotFoundError:
            raise DatasetError(f"{file}: VOC file not found") from None
        except (ET.ParseError, AttributeError, TypeError, ValueError) as error:
            if isinstance(error, DatasetError):
                raise
            raise DatasetError(f"{file}: not a VOC annotation ({type(error).__name__}: {error})") from None
    return table


def read_box_csv(path: str | Path) -> BoxTable:
    """CSV with columns ``file, bone, x1, y1, x2, y2`` (one row per box)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: box CSV not found")
    table: BoxTable = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        required = {"file", "bone", "x1", "y1", "x2", "y2"}
        missing = required - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            bone = bone_of_label(row["bone"])
            if bone is None:
                raise DatasetError(f"{path} line {line}: unknown bone {row['bone']!r}")
            box = _box_from_text([row[k] for k in ("x1", "y1", "x2", "y2")], f"{path} line {line}")
            _add(table, Path(row["file"]).name, bone, box, f"{path} line {line}")
    return table


def read_boxes(path: str | Path) -> BoxTable:
    """Pick the reader from the file: ``.json`` COCO, ``.xml`` or a folder VOC, ``.csv`` CSV."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".xml":
        return read_voc(path)
    if path.suffix.lower() == ".json":
        return read_coco(path)
    if path.suffix.lower() == ".csv":
        return read_box_csv(path)
    raise DatasetError(f"{path}: unknown box format (use COCO .json, VOC .xml or folder, or .csv)")


def write_coco(table: BoxTable, sizes: dict[str, tuple[int, int]]) -> dict:
    """A COCO detection dict for ``table``; ``sizes`` maps file name to (height, width)."""
    categories = [{"id": i + 1, "name": bone} for i, bone in enumerate(BONES)]
    images, annotations = [], []
    for image_id, name in enumerate(sorted(table), start=1):
        height, width = sizes[name]
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for bone, (x1, y1, x2, y2) in table[name].items():
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": BONES.index(bone) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })
    return {"images": images, "annotations": annotations, "categories": categories}
