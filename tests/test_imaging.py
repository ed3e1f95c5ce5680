import numpy as np
import pytest
from PIL import Image

from drustage.imaging import MAX_PIXELS, DetectorFrame, RadiographError, downscale, exposed_region, load_radiograph

IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber")


def _ramp(h=64, w=48, maximum=255, dtype=np.uint8):
    return (np.linspace(0, maximum, h * w).reshape(h, w)).astype(dtype)


def test_png_8bit(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_ramp()).save(path)
    radiograph = load_radiograph(path)
    assert radiograph.image.dtype == np.float32 and radiograph.image.shape == (64, 48)
    assert radiograph.image.min() == 0.0 and radiograph.image.max() == 1.0
    assert radiograph.meta.bit_depth == 8 and radiograph.meta.original_size == (64, 48)
    assert radiograph.meta.source == "a.png"


def test_png_16bit_is_windowed(tmp_path):
    path = tmp_path / "a.png"
    data = _ramp(maximum=4095, dtype=np.uint16)  # 12-bit data in a 16-bit file
    Image.fromarray(data).save(path)
    radiograph = load_radiograph(path)
    assert radiograph.meta.bit_depth == 16
    assert radiograph.image.max() == pytest.approx(1.0) and radiograph.image.min() == pytest.approx(0.0)
    # monotone: the window preserves order
    assert np.all(np.diff(radiograph.image.ravel()) >= 0)


@pytest.mark.parametrize("suffix,dtype,maximum", [(".tif", np.uint8, 255), (".tif", np.uint16, 65535),
                                                  (".jpg", np.uint8, 255)])
def test_tiff_and_jpeg(tmp_path, suffix, dtype, maximum):
    path = tmp_path / f"a{suffix}"
    Image.fromarray(_ramp(maximum=maximum, dtype=dtype)).save(path)
    radiograph = load_radiograph(path)
    assert radiograph.image.shape == (64, 48)
    assert radiograph.image[0, 0] < 0.05 and radiograph.image[-1, -1] > 0.95


def test_rgb_becomes_grey(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.stack([_ramp()] * 3, -1)).save(path)
    assert load_radiograph(path).image.ndim == 2


@pytest.mark.parametrize("content,problem", [(b"", "empty file"), (b"not an image at all" * 10, "not an image")])
def test_bad_files(tmp_path, content, problem):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(RadiographError, match=problem) as info:
        load_radiograph(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_png(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(RadiographError, match="t.png"):
        load_radiograph(path)


def test_missing_and_directory(tmp_path):
    with pytest.raises(RadiographError, match="no such file"):
        load_radiograph(tmp_path / "nope.png")
    with pytest.raises(RadiographError, match="directory"):
        load_radiograph(tmp_path)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    side = int(MAX_PIXELS ** 0.5) + 100
    path = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(path)  # tiny file, huge image
    assert path.stat().st_size < 2_000_000
    with pytest.raises(RadiographError, match="limit"):
        load_radiograph(path)


def test_too_small(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("L", (4, 4)).save(path)
    with pytest.raises(RadiographError, match="too small"):
        load_radiograph(path)


def test_multi_frame_tiff_refused(tmp_path):
    path = tmp_path / "stack.tif"
    frames = [Image.fromarray(_ramp()) for _ in range(2)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(RadiographError, match="multi-frame"):
        load_radiograph(path)


# ----------------------------------------------------------------------------- DICOM


def _dicom(path, pixels, photometric="MONOCHROME2", syntax=None, **attrs):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "SECRET-123", "20100101"
    ds.InstitutionName, ds.AccessionNumber = "St Example Hospital", "ACC-999"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    if syntax is not None:
        ds.compress(syntax, pixels if pixels.ndim == 2 else None)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_dicom_photometric(tmp_path, photometric):
    pixels = _ramp(maximum=4000, dtype=np.uint16)
    path = _dicom(tmp_path / "x.bin", pixels, photometric, BitsStored=12, ImageLaterality="L",
                  PixelSpacing=["0.1", "0.12"])
    radiograph = load_radiograph(path)  # detected by content: the name has no .dcm
    image = radiograph.image
    if photometric == "MONOCHROME1":
        assert image[0, 0] > 0.95 and image[-1, -1] < 0.05  # inverted: low values are white
    else:
        assert image[0, 0] < 0.05 and image[-1, -1] > 0.95
    meta = radiograph.meta
    assert meta.format == "dicom" and meta.bit_depth == 12 and meta.laterality == "L"
    assert meta.pixel_spacing_mm == (0.1, 0.12)
    text = repr(meta.to_dict())
    for secret in ("Doe", "Jane", "SECRET-123", "20100101", "Example Hospital", "ACC-999"):
        assert secret not in text


def test_dicom_rescale_and_window(tmp_path):
    pixels = _ramp(maximum=1000, dtype=np.uint16)
    path = _dicom(tmp_path / "w.dcm", pixels, RescaleSlope="2", RescaleIntercept="-100",
                  WindowCenter="900", WindowWidth="1000")
    image = load_radiograph(path).image
    values = pixels.astype(float) * 2 - 100
    expected = np.clip((values - 899.5) / 999 + 0.5, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-5)


@pytest.mark.parametrize("syntax_name", ["RLELossless", "JPEG2000Lossless"])
def test_dicom_compressed(tmp_path, syntax_name):
    import pydicom.uid

    pixels = _ramp(maximum=3000, dtype=np.uint16)
    path = _dicom(tmp_path / "c.dcm", pixels, syntax=getattr(pydicom.uid, syntax_name), BitsStored=16)
    import pydicom

    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax_name)
    image = load_radiograph(path).image
    reference = _dicom(tmp_path / "u.dcm", pixels, BitsStored=16)
    np.testing.assert_allclose(image, load_radiograph(reference).image, atol=1e-6)


def test_dicom_multi_frame_refused(tmp_path):
    pixels = np.stack([_ramp(dtype=np.uint8)] * 3)
    path = _dicom(tmp_path / "mf.dcm", pixels, NumberOfFrames=3)
    with pytest.raises(RadiographError, match="multi-frame"):
        load_radiograph(path)


def test_dicom_without_pixels_refused(tmp_path):
    pixels = _ramp(dtype=np.uint8)
    path = _dicom(tmp_path / "np.dcm", pixels)
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(RadiographError, match="no image"):
        load_radiograph(path)


@pytest.mark.real
def test_real_8bit_and_16bit(real_data):
    eight = sorted((real_data / "rsna-halfres" / "images").glob("*.png"))[0]
    sixteen = sorted((real_data / "wrist-16bit" / "images").glob("*.png"))[0]
    a, b = load_radiograph(eight), load_radiograph(sixteen)
    assert a.meta.bit_depth == 8 and b.meta.bit_depth == 16
    for radiograph in (a, b):
        assert 0.0 <= radiograph.image.min() < 0.1 and radiograph.image.max() > 0.9
        assert radiograph.image.shape == radiograph.meta.original_size
    # Windowing spreads the 16-bit wrist over the display range instead of leaving it dark.
    assert 0.15 < b.image.mean() < 0.85


def test_dicom_patient_sex_and_age_are_read_for_the_checks_only(tmp_path):
    from drustage.imaging import dicom_patient_sex_age

    pixels = np.zeros((64, 64), np.uint8)
    for k, (age, years) in enumerate((("012Y", 12.0), ("030M", 2.5), ("052W", 52 / 52.18), ("999Y", None),
                                      ("12Y", None))):
        path = _dicom(tmp_path / f"p{k}.dcm", pixels, PatientSex="F", PatientAge=age)
        sex, read = dicom_patient_sex_age(path)
        assert sex == "F" and (read == pytest.approx(years) if years else read is None), age
        meta = load_radiograph(path).meta.to_dict()
        assert age not in str(meta) and "PatientSex" not in str(meta)
    assert dicom_patient_sex_age(_dicom(tmp_path / "none.dcm", pixels)) == (None, None)
    png = tmp_path / "x.png"
    Image.fromarray(pixels).save(png)
    assert dicom_patient_sex_age(png) == (None, None)


def test_the_detector_sees_a_padded_films_exposed_region_and_boxes_map_back():
    rng = np.random.default_rng(0)
    frame = np.zeros((1000, 1000), np.float32)
    frame[100:600, 300:700] = 0.1 + 0.8 * rng.random((500, 400), dtype=np.float32)
    rows, cols = exposed_region(frame)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (90, 610, 292, 708)  # 2% margins
    pixels, view = downscale(frame, 260)
    assert pixels.shape == (260, 208) and (view.left, view.top) == (292, 90)
    box = (350.0, 400.0, 420.0, 480.0)
    assert view.to_original(view.to_detector(box), frame.shape) == pytest.approx(box)
    # a film filling most of its frame (dark soft tissue, a marker) is left whole
    frame[:, :] = 0.0
    frame[100:900, 100:900] = 0.5
    assert exposed_region(frame) == (slice(0, 1000), slice(0, 1000))
    # a blank film has no exposed area to crop to
    assert exposed_region(np.full((300, 200), 0.4, np.float32)) == (slice(0, 300), slice(0, 200))
    assert downscale(frame, 500)[1] == DetectorFrame(0.5)
    # boxes mapped back never leave the image
    mapped = DetectorFrame(0.5, 10, 20).to_original((0.0, 0.0, 600.0, 600.0), (1000, 1000))
    assert mapped == (10.0, 20.0, 1000.0, 1000.0)
