import json

import pytest

from drustage.data.annotations import read_box_csv, read_boxes, read_coco, read_voc, write_coco
from drustage.data.layout import DatasetError

TABLE = {"a.png": {"radius": (10.0, 20.0, 60.0, 90.0), "ulna": (70.0, 25.0, 100.0, 80.0)},
         "b.png": {"radius": (1.0, 2.0, 7.0, 8.0)}}


def test_coco_round_trip(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(write_coco(TABLE, {"a.png": (200, 150), "b.png": (10, 10)})))
    assert read_coco(path) == TABLE
    assert read_boxes(path) == TABLE


def test_coco_category_names_are_flexible(tmp_path):
    data = {"images": [{"id": 1, "file_name": "dir/a.png"}],
            "categories": [{"id": 5, "name": "Distal_Radius"}, {"id": 6, "name": "finger"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 30, 40]},
                            {"id": 2, "image_id": 1, "category_id": 6, "bbox": [1, 2, 30, 40]}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    assert read_coco(path) == {"a.png": {"radius": (1.0, 2.0, 31.0, 42.0)}}


def test_voc(tmp_path):
    xml = """<annotation><filename>a.png</filename>
      <object><name>radius</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>60</xmax><ymax>90</ymax></bndbox></object>
      <object><name>distal ulna</name>
        <bndbox><xmin>70</xmin><ymin>25</ymin><xmax>100</xmax><ymax>80</ymax></bndbox></object>
    </annotation>"""
    (tmp_path / "a.xml").write_text(xml)
    assert read_voc(tmp_path) == {"a.png": TABLE["a.png"]}


def test_csv(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("file,bone,x1,y1,x2,y2\na.png,radius,10,20,60,90\na.png,ulna,70,25,100,80\n")
    assert read_box_csv(path) == {"a.png": TABLE["a.png"]}


@pytest.mark.parametrize("content,message", [
    ("file,bone,x1,y1,x2,y2\na.png,femur,1,2,3,4\n", "unknown bone"),
    ("file,bone,x1,y1,x2,y2\na.png,radius,5,2,3,4\n", "no area"),
    ("file,bone,x1,y1,x2,y2\na.png,radius,a,2,3,4\n", "must be numbers"),
    ("file,bone,x1,y1\na.png,radius,1,2\n", "missing column"),
    ("file,bone,x1,y1,x2,y2\na.png,radius,1,2,2,3\n", "under 4 pixels"),
    ("file,bone,x1,y1,x2,y2\na.png,radius,1,2,30,40\na.png,radius,1,2,30,40\n", "more than one radius"),
])
def test_csv_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "boxes.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message) as info:
        read_box_csv(path)
    assert "boxes.csv" in str(info.value)


def test_bad_formats(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(DatasetError, match="not a COCO"):
        read_coco(bad)
    broken = tmp_path / "y.xml"
    broken.write_text("<annotation>")
    with pytest.raises(DatasetError, match="not a VOC"):
        read_voc(broken)
    with pytest.raises(DatasetError, match="unknown box format"):
        read_boxes(tmp_path / "boxes.txt")
