import numpy as np
import pytest

from drustage.data.layout import DatasetError, Record, read_dataset, write_labels, write_manifest
from drustage.data.splits import stratified_split
from drustage.stages import Stage


def test_layout_round_trip(tmp_path):
    records = [
        Record("a", "images/a.png", "L", "F", 12.5, {"radius": Stage("radius", 7), "ulna": Stage("ulna", 5)},
               {"radius": (1.0, 2.0, 30.0, 40.0), "ulna": (31.0, 2.0, 50.0, 40.0)}),
        Record("b", "images/b.dcm"),
    ]
    write_labels(tmp_path, records)
    write_manifest(tmp_path, source="test")
    dataset = read_dataset(tmp_path)
    assert dataset.records == tuple(records)
    assert dataset.manifest["format"] == "drustage-dataset"
    assert [r.image_id for r in dataset.labelled("radius")] == ["a"]
    assert dataset.path_of(records[0]) == tmp_path / "images/a.png"


@pytest.mark.parametrize("row,message", [
    ("a,images/a.png,L,F,12,R13,U5,,,,,,,,", "1..11"),
    ("a,images/a.png,X,F,12,R7,U5,,,,,,,,", "laterality"),
    ("a,images/a.png,L,F,12,R7,U5,1,2,3,,,,,", "incomplete"),
    ("a,images/a.png,L,F,old,R7,U5,,,,,,,,", "not a number"),
    (",images/a.png,L,F,12,R7,U5,,,,,,,,", "required"),
])
def test_bad_labels_name_line(tmp_path, row, message):
    header = ("image_id,file,laterality,sex,age_years,radius_stage,ulna_stage,radius_x1,radius_y1,radius_x2,"
              "radius_y2,ulna_x1,ulna_y1,ulna_x2,ulna_y2")
    (tmp_path / "labels.csv").write_text(header + "\n" + row + "\n")
    with pytest.raises(DatasetError, match=message) as info:
        read_dataset(tmp_path)
    assert "labels.csv line 2" in str(info.value)


def test_missing_dataset(tmp_path):
    with pytest.raises(DatasetError, match="no labels.csv"):
        read_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such directory"):
        read_dataset(tmp_path / "nope")


def test_split_fixed_per_class_is_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [150, 200, 100])
    split = stratified_split(labels, test=50, validation=0.1, seed=3)
    assert [int((labels[split.test] == c).sum()) for c in range(3)] == [50, 50, 50]
    assert [int((labels[split.validation] == c).sum()) for c in range(3)] == [10, 15, 5]
    everything = np.concatenate([split.train, split.validation, split.test])
    assert sorted(everything.tolist()) == list(range(len(labels)))
    again = stratified_split(labels, test=50, validation=0.1, seed=3)
    assert np.array_equal(again.test, split.test)
    other = stratified_split(labels, test=50, validation=0.1, seed=4)
    assert not np.array_equal(other.test, split.test)


def test_split_fraction_and_errors():
    labels = np.repeat([0, 1], [40, 60])
    split = stratified_split(labels, test=0.2, validation=0.0, seed=0)
    assert [int((labels[split.test] == c).sum()) for c in range(2)] == [8, 12]
    with pytest.raises(ValueError, match="class 0 has 40 items"):
        stratified_split(labels, test=40, validation=0, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(labels, test=1.5, validation=0, seed=0)
