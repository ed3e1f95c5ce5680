import datetime as dt

import pandas as pd
import pytest

from drustage.data.labels import key_tokens, list_images, match_labels, read_label_sheet
from drustage.data.layout import DatasetError


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    for name in ("20170312_0045.png", "20170312_0046.png", "20180101_0001.dcm", "notes.txt"):
        (folder / name).write_bytes(b"x")
    return folder


ROWS = [
    {"date": "2017-03-12", "serial": "45", "radius": "R7", "ulna": "U5"},
    {"date": "2017-03-12", "serial": "46", "radius": "R9", "ulna": "U7"},
    {"date": "2019-01-01", "serial": "9", "radius": "R2", "ulna": "U1"},
]


def test_tokens_normalise_dates_and_zeros():
    assert key_tokens(["2017-03-12", "0045"]) == ("20170312", "45")
    assert key_tokens([dt.datetime(2017, 3, 12), 45.0]) == ("20170312", "45")
    assert key_tokens(["20170312_0045.png"]) == ("20170312", "45")


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".xls"])
def test_sheets_match_by_date_and_serial(tmp_path, images, suffix):
    sheet = tmp_path / f"labels{suffix}"
    frame = pd.DataFrame(ROWS)
    if suffix == ".csv":
        frame.to_csv(sheet, index=False)
    elif suffix == ".xlsx":
        frame["date"] = pd.to_datetime(frame["date"])  # Excel exports carry real dates
        frame["serial"] = frame["serial"].astype(int)
        frame.to_excel(sheet, index=False, engine="openpyxl")
    else:
        xlwt = pytest.importorskip("xlwt")
        book = xlwt.Workbook()
        ws = book.add_sheet("labels")
        for c, name in enumerate(ROWS[0]):
            ws.write(0, c, name)
        for r, row in enumerate(ROWS, start=1):
            for c, name in enumerate(row):
                ws.write(r, c, int(row[name]) if name == "serial" else row[name])
        book.save(str(sheet))
    loaded = read_label_sheet(sheet)
    match = match_labels(loaded, list_images(images), ["date", "serial"])
    matched = {path.name: row["radius"] for path, row in match.matched}
    assert matched == {"20170312_0045.png": "R7", "20170312_0046.png": "R9"}
    assert match.unmatched_rows == [4]
    assert [p.name for p in match.unlabelled_files] == ["20180101_0001.dcm"]


def test_match_by_file_name_column(tmp_path, images):
    frame = pd.DataFrame([{"file": "20170312_0045.png", "radius": "R7"}])
    match = match_labels(frame, list_images(images), ["file"])
    assert [p.name for p, _ in match.matched] == ["20170312_0045.png"]


def test_duplicate_keys_are_reported(images):
    frame = pd.DataFrame([ROWS[0], ROWS[0]])
    match = match_labels(frame, list_images(images), ["date", "serial"])
    assert len(match.matched) == 1 and match.duplicate_keys == [("20170312", "45")]


def test_missing_key_column_is_named(images):
    frame = pd.DataFrame(ROWS)
    with pytest.raises(DatasetError, match="key column.*serial_no"):
        match_labels(frame, list_images(images), ["date", "serial_no"])


def test_bad_sheets(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_label_sheet(tmp_path / "none.csv")
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="bad.xlsx: cannot read"):
        read_label_sheet(bad)
    odd = tmp_path / "labels.pdf"
    odd.write_bytes(b"%PDF")
    with pytest.raises(DatasetError, match="unsupported"):
        read_label_sheet(odd)


def test_empty_image_folder(tmp_path):
    with pytest.raises(DatasetError, match="no image files"):
        list_images(tmp_path)


def test_list_images_keeps_suffixless_dicom_only(tmp_path):
    (tmp_path / "LICENSE").write_text("MIT")
    dicom = tmp_path / "IM0001"
    dicom.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    (tmp_path / "a.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["IM0001", "a.png"]
