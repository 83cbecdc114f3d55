from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from monai.data import PydicomReader
from monai.transforms import LoadImage, LoadImaged
from pydicom.uid import generate_uid

from medmonai.data.dicom import (
    SKIPPED,
    DicomError,
    DicomSeriesReader,
    SeriesInfo,
    is_error,
    scan_dicom_folder,
)
from medmonai.utils import shared_data_dir
from tests.data.dicom_factory import AXIAL, CORONAL, SAGITTAL, write_series, write_slice

OBLIQUE = (
    np.cos(0.3),
    np.sin(0.3),
    0.0,
    -np.sin(0.3) * np.cos(0.2),
    np.cos(0.3) * np.cos(0.2),
    np.sin(0.2),
)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _load(path, **kw):
    # the reader is given at call time: LoadImage(reader=...) would fall back to MONAI's readers on errors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LoadImage(image_only=True)(path, reader=DicomSeriesReader(**kw))


def _check_world_mapping(img, series):
    """Every written slice must land where its ImagePositionPatient says, with its pixels transposed."""
    affine = img.affine.numpy()
    arr = img.numpy()
    iop = np.asarray(series.orientation)
    sx, sy, _ = series.spacing
    inv = np.linalg.inv(affine)
    for k, pos in enumerate(series.positions):
        vox = inv @ np.r_[LPS_TO_RAS @ pos, 1.0]
        m = int(round(vox[2]))
        np.testing.assert_allclose(vox[:3], [0, 0, m], atol=1e-6)
        np.testing.assert_allclose(arr[:, :, m], series.physical[:, :, k], rtol=1e-6, atol=1e-3)
        for i, j in ((1, 0), (0, 1), (3, 2)):
            world_lps = pos + i * sx * iop[:3] + j * sy * iop[3:]
            np.testing.assert_allclose(affine @ [i, j, m, 1], np.r_[LPS_TO_RAS @ world_lps, 1.0], atol=1e-6)


@pytest.mark.parametrize(
    "orientation,reverse",
    [(AXIAL, False), (SAGITTAL, False), (CORONAL, False), (OBLIQUE, False), (AXIAL, True), (SAGITTAL, True)],
    ids=["axial", "sagittal", "coronal", "oblique", "axial-reversed", "sagittal-reversed"],
)
def test_shuffled_names_sort_by_position(tmp_path, orientation, reverse):
    shape, spacing = (5, 4, 7), (0.5, 0.8, 2.0)
    iop = np.asarray(orientation)
    normal = np.cross(iop[:3], iop[3:])
    origin = np.array([-10.0, 20.0, 5.0])
    sign = -1.0 if reverse else 1.0  # reversed: positions decrease with the written slice index / InstanceNumber
    positions = [origin + sign * k * spacing[2] * normal for k in range(shape[2])]
    s = write_series(tmp_path / "s", shape, spacing, orientation, positions=positions, slopes=2.0, intercepts=-5.0)

    series, problems = scan_dicom_folder(tmp_path)
    assert problems == [] and len(series) == 1
    info = series[0]
    expected_order = s.files[::-1] if reverse else s.files
    assert info.files == [str(f) for f in expected_order]
    assert info.spatial_shape == shape and info.n_slices == 7
    assert info.pixel_spacing == (0.8, 0.5) and info.slice_spacing == pytest.approx(2.0)

    img = _load(s.folder)
    assert tuple(img.shape) == shape
    assert img.dtype.is_floating_point
    np.testing.assert_allclose(img.affine.numpy(), info.affine, atol=1e-9)
    np.testing.assert_allclose(img.meta["spacing"], spacing, atol=1e-9)
    _check_world_mapping(img, s)
    expected = s.physical[:, :, ::-1] if reverse else s.physical
    np.testing.assert_allclose(img.numpy(), expected, atol=1e-3)


def test_matches_monai_pydicom_reader(tmp_path):
    s = write_series(tmp_path, (6, 5, 4), (0.7, 0.9, 3.0), OBLIQUE, slopes=0.5, intercepts=10.0)
    ours = _load(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LoadImage(reader=PydicomReader(), image_only=True)(str(tmp_path))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.affine.numpy(), ref.affine.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-4)
    np.testing.assert_allclose(ours.numpy(), s.physical, atol=1e-4)
    for key in ("affine", "original_affine", "spatial_shape", "spacing", "original_channel_dim", "space"):
        assert key in ours.meta
    assert ours.meta["space"] == "RAS"
    assert ours.meta["SeriesInstanceUID"] == s.series_uid
    assert "PatientID" not in ours.meta and "PatientName" not in ours.meta


def test_rescale_per_slice_and_dict_transform(tmp_path):
    s = write_series(tmp_path, (4, 3, 3), slopes=[1.0, 2.0, 0.25], intercepts=[0.0, -1024.0, 7.5])
    out = LoadImaged("image", reader=DicomSeriesReader(), image_only=True, ensure_channel_first=True)(
        {"image": str(tmp_path)}
    )
    img = out["image"]
    assert tuple(img.shape) == (1, 4, 3, 3)
    np.testing.assert_allclose(img[0].numpy(), s.physical, atol=1e-4)
    assert img[0, 0, 0, 1].item() == pytest.approx(s.volume[0, 0, 1] * 2.0 - 1024.0)


def test_list_of_files_and_reader_list(tmp_path):
    s = write_series(tmp_path / "a", (4, 3, 5))
    shuffled = [str(s.files[i]) for i in (3, 0, 4, 1, 2)]
    reader = DicomSeriesReader()
    assert reader.verify_suffix(shuffled) and reader.verify_suffix(str(s.folder))
    assert reader.verify_suffix(str(s.files[0]))
    img = _load(shuffled)
    np.testing.assert_allclose(img.numpy(), s.physical, atol=1e-4)
    # registered in a reader list: chosen for DICOM, not for a PNG
    loader = LoadImage(reader=None, image_only=True)
    loader.register(DicomSeriesReader())
    np.testing.assert_allclose(loader(str(s.folder)).numpy(), s.physical, atol=1e-4)
    (tmp_path / "x.png").write_bytes(b"\x89PNG....")
    assert not reader.verify_suffix(str(tmp_path / "x.png"))
    # a file with the DICM magic but no suffix
    shutil.copy(s.files[0], tmp_path / "noext")
    assert reader.verify_suffix(str(tmp_path / "noext"))


def test_single_file_is_2d_like_pydicom_reader(tmp_path):
    pixels = np.arange(12, dtype=np.int16).reshape(3, 4)  # 3 rows, 4 columns
    f = write_slice(tmp_path / "one.dcm", pixels, series_uid=generate_uid(), position=(5.0, 6.0, 7.0),
                    pixel_spacing=(0.8, 0.5), slope=2.0, intercept=1.0)  # fmt: skip
    img = _load(str(f))
    assert tuple(img.shape) == (4, 3)
    np.testing.assert_allclose(img.numpy(), pixels.T * 2.0 + 1.0)
    assert img.affine.shape == (4, 4)
    np.testing.assert_allclose(img.meta["spacing"], [0.5, 0.8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LoadImage(reader=PydicomReader(), image_only=True)(str(f))
    assert ref.shape == img.shape
    np.testing.assert_allclose(img.affine.numpy(), ref.affine.numpy(), atol=1e-9)
    np.testing.assert_allclose(img.numpy(), ref.numpy())
    # a folder holding one file gives the same
    np.testing.assert_allclose(_load(str(tmp_path)).numpy(), img.numpy())


def test_2d_without_geometry_and_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, size=(3, 5, 3)).astype(np.uint8)
    f = write_slice(tmp_path / "rgb.dcm", rgb, series_uid=generate_uid(), position=None, orientation=None,
                    pixel_spacing=None, extra={"ImagerPixelSpacing": [0.2, 0.3]})  # fmt: skip
    reader = DicomSeriesReader()
    arr, meta = reader.get_data(reader.read(str(f)))
    assert arr.shape == (5, 3, 3) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, np.transpose(rgb, (1, 0, 2)))
    assert meta["original_channel_dim"] == -1
    np.testing.assert_allclose(meta["spacing"], [0.3, 0.2])
    img = LoadImage(reader=DicomSeriesReader(), image_only=True, ensure_channel_first=True)(str(f))
    assert tuple(img.shape) == (3, 5, 3)


def test_two_series_in_one_folder(tmp_path):
    a = write_series(tmp_path, (4, 3, 3), names=["a1.dcm", "a2.dcm", "a3.dcm"])
    b = write_series(tmp_path, (4, 3, 2), names=["b1.dcm", "b2.dcm"], seed=1)
    series, problems = scan_dicom_folder(tmp_path)
    assert problems == []
    assert sorted(s.series_uid for s in series) == sorted([a.series_uid, b.series_uid])
    with pytest.raises(DicomError, match="expected exactly one DICOM series, found 2") as e:
        _load(str(tmp_path))
    assert a.series_uid in str(e.value) and b.series_uid in str(e.value)
    img = _load(str(tmp_path), series_uid=b.series_uid)
    np.testing.assert_allclose(img.numpy(), b.physical, atol=1e-4)
    with pytest.raises(DicomError, match="one DICOM series"):  # files of two series
        _load([str(a.files[0]), str(b.files[0])])
    with pytest.raises(DicomError, match="not found"):
        _load(str(tmp_path), series_uid="9.9.9")


def test_series_info_metadata_is_not_identifying(tmp_path):
    write_series(tmp_path, (4, 3, 3), patient_id="SECRET-ID")
    info = scan_dicom_folder(tmp_path)[0][0]
    assert isinstance(info, SeriesInfo) and info.patient_id == "SECRET-ID"
    md = info.to_entry_metadata()
    assert set(md) == {"StudyInstanceUID", "SeriesInstanceUID", "Modality", "n_slices", "spacing", "shape"}
    assert "SECRET" not in repr(md) and "Test^Patient" not in repr(md)
    assert md["shape"] == [4, 3, 3] and md["spacing"] == pytest.approx([0.5, 0.8, 2.0])


# ---------------------------------------------------------------------------------------------- bad inputs


def _truncate(f, n):
    data = f.read_bytes()
    f.write_bytes(data[:-n])


def _bad_case(name, tmp_path):
    """Write a series with one problem; return (folder, expected message part, files that must be named)."""
    d = tmp_path / name
    nk = 6
    if name == "truncated":
        s = write_series(d, (4, 3, nk))
        _truncate(s.files[2], 10)
        return d, "truncated", [s.files[2]]
    if name == "empty":
        write_series(d, (4, 3, nk))
        (d / "zero.dcm").write_bytes(b"")
        return d, "empty file", [d / "zero.dcm"]
    if name == "not_dicom":
        write_series(d, (4, 3, nk))
        (d / "notes.dcm").write_text("this is not DICOM\n" * 20)
        return d, "not a DICOM file", [d / "notes.dcm"]
    if name == "no_pixels":
        write_series(d, (4, 3, nk))
        f = write_slice(d / "nopix.dcm", np.zeros((3, 4)), series_uid=generate_uid(), with_pixels=False)
        return d, "without pixel data", [f]
    if name == "missing_position":
        s = write_series(d, (4, 3, nk))
        ds = pydicom.dcmread(s.files[1])
        del ds.ImagePositionPatient
        ds.save_as(s.files[1])
        return d, "missing essential geometry tag ImagePositionPatient", [s.files[1]]
    if name == "missing_rows":
        s = write_series(d, (4, 3, nk))
        ds = pydicom.dcmread(s.files[1])
        del ds.Rows
        ds.save_as(s.files[1])
        return d, "missing essential tag\\(s\\) Rows", [s.files[1]]
    if name == "inconsistent_orientation":
        s = write_series(d, (4, 3, nk))
        ds = pydicom.dcmread(s.files[3])
        ds.ImageOrientationPatient = list(CORONAL)
        ds.save_as(s.files[3])
        return d, "inconsistent ImageOrientationPatient", [s.files[3]]
    if name == "inconsistent_pixel_spacing":
        s = write_series(d, (4, 3, nk))
        ds = pydicom.dcmread(s.files[3])
        ds.PixelSpacing = [0.9, 0.5]
        ds.save_as(s.files[3])
        return d, "inconsistent PixelSpacing", [s.files[3]]
    if name == "inconsistent_size":
        s = write_series(d, (4, 3, nk))
        write_slice(s.files[3], np.zeros((4, 4)), series_uid=s.series_uid, position=s.positions[3],
                    pixel_spacing=(0.8, 0.5))  # fmt: skip
        return d, "inconsistent Rows/Columns", [s.files[3]]
    if name == "duplicate":
        pos = [(0, 0, 2.0 * k) for k in range(nk)]
        pos[3] = pos[2]
        s = write_series(d, (4, 3, nk), orientation=AXIAL, positions=pos)
        return d, "duplicate slice position", [s.files[2], s.files[3]]
    if name == "gap":
        s = write_series(d, (4, 3, nk), spacing=(0.5, 0.8, 2.0))
        os.unlink(s.files[3])
        return d, "missing slice\\(s\\).*4 mm apart, expected 2 mm", [s.files[2], s.files[4]]
    if name == "gap_small":  # 4 slices, one missing: steps 2 and 4 mm (the median is no reference)
        s = write_series(d, (4, 3, 4), spacing=(0.5, 0.8, 2.0))
        os.unlink(s.files[2])
        return d, "missing slice\\(s\\).*4 mm apart, expected 2 mm", [s.files[1], s.files[3]]
    if name == "nonuniform":
        z = [0.0, 2.0, 4.0, 6.5, 8.5, 10.5]
        s = write_series(d, (4, 3, nk), orientation=AXIAL, positions=[(0, 0, v) for v in z])
        return d, "inconsistent slice spacing", [s.files[2], s.files[3]]
    if name == "shifted":
        pos = [(0.0, 0.0, 2.0 * k) for k in range(nk)]
        pos[4] = (3.0, 0.0, 8.0)
        s = write_series(d, (4, 3, nk), orientation=AXIAL, positions=pos)
        return d, "not on a straight line", [s.files[4]]
    if name == "multiframe":
        write_series(d, (4, 3, nk))
        f = write_slice(d / "mf.dcm", np.zeros((3, 4)), series_uid=generate_uid(), with_pixels=False,
                        extra={"NumberOfFrames": 2, "PixelData": np.zeros((2, 3, 4), np.int16).tobytes()})  # fmt: skip
        return d, "multi-frame DICOM file \\(NumberOfFrames=2\\) is not supported", [f]
    raise AssertionError(name)


BAD_CASES = [
    "truncated",
    "empty",
    "not_dicom",
    "no_pixels",
    "missing_position",
    "missing_rows",
    "inconsistent_orientation",
    "inconsistent_pixel_spacing",
    "inconsistent_size",
    "duplicate",
    "gap",
    "gap_small",
    "nonuniform",
    "shifted",
    "multiframe",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_and_skips(tmp_path, case):
    folder, message, named = _bad_case(case, tmp_path)
    with pytest.raises(DicomError, match=message) as e:
        scan_dicom_folder(folder, on_error="raise")
    for f in named:
        assert str(f) in str(e.value), f"{f} not named in: {e.value}"
    assert e.value.path
    # the reader refuses the folder with the same explanation
    with pytest.raises(DicomError, match=message):
        _load(str(folder))
    # skip mode: reported, bad files/series left out, nothing raised
    series, problems = scan_dicom_folder(folder, on_error="skip")
    errors = [p for p in problems if is_error(p)]
    assert all(str(f) in str(errors[0]) for f in named), errors
    if case in {"empty", "not_dicom", "no_pixels", "multiframe"}:
        # an extra bad file beside an otherwise valid series: it may be a lost first/last slice (no gap to detect),
        # so the series is left out too, with the reason
        assert len(errors) == 2 and series == []
        assert "may be one of its slices" in errors[1].reason
    elif case in {"truncated", "missing_rows"}:  # a bad slice: left out, so its series now has a gap
        assert len(errors) == 2 and "missing slice" in errors[1].reason and series == []
    else:  # a bad series: left out
        assert len(errors) == 1 and series == []


def test_dicomdir_hidden_and_non_image_files_are_skipped(tmp_path):
    s = write_series(tmp_path, (4, 3, 3))
    # a DICOMDIR (DICOM, no image)
    write_slice(tmp_path / "DICOMDIR", np.zeros((1, 1)), series_uid=generate_uid(), with_pixels=False,
                extra={"DirectoryRecordSequence": []})  # fmt: skip
    # a structured report (no image) and other files
    write_slice(tmp_path / "sr.dcm", np.zeros((1, 1)), series_uid=generate_uid(), with_pixels=False, modality="SR")
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / "._im0000.dcm").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    series, problems = scan_dicom_folder(tmp_path, on_error="raise")
    assert len(series) == 1 and series[0].files == [str(f) for f in s.files]
    reasons = {os.path.basename(p.file): p.reason for p in problems}
    assert reasons["DICOMDIR"] == "DICOMDIR (no image)"
    assert "SR object without pixel data" in reasons["sr.dcm"]
    assert "not a DICOM file (ignored" in reasons["README.txt"]
    assert all(p.key == SKIPPED and not is_error(p) for p in problems) and len(problems) == 3
    np.testing.assert_allclose(_load(str(tmp_path)).numpy(), s.physical, atol=1e-4)


def test_recursive_scan_and_missing_folder(tmp_path):
    write_series(tmp_path / "p1" / "s1", (4, 3, 3))
    write_series(tmp_path / "p2" / "s1", (4, 3, 2), seed=2)
    series, _ = scan_dicom_folder(tmp_path)
    assert [os.path.relpath(s.folder, tmp_path) for s in series] == ["p1/s1", "p2/s1"]
    with pytest.raises(DicomError, match="no files found"):
        scan_dicom_folder(tmp_path, recursive=False)
    with pytest.raises(DicomError, match="does not exist"):
        scan_dicom_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="on_error"):
        scan_dicom_folder(tmp_path, on_error="ignore")


def test_compressed_file_decoded_through_simpleitk(tmp_path):
    """JPEG Lossless has no pydicom decoder here: SimpleITK (GDCM) decodes it, with the file's rescale."""
    stored = np.arange(20 * 30, dtype=np.int16).reshape(20, 30)
    f = str(tmp_path / "jpeg.dcm")
    w = sitk.ImageFileWriter()
    w.SetFileName(f)
    w.SetUseCompression(True)
    w.SetCompressor("JPEG")
    w.Execute(sitk.GetImageFromArray(stored[None]))
    ds = pydicom.dcmread(f)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    ds.RescaleSlope, ds.RescaleIntercept = 2.5, -100
    ds.PixelSpacing = [0.7, 0.5]
    ds.save_as(f)
    img = _load(f)
    assert tuple(img.shape) == (30, 20)
    np.testing.assert_allclose(img.numpy(), stored.T * 2.5 - 100, atol=1e-4)


# ------------------------------------------------------------------------------------------------ real data

MR_BRAIN = shared_data_dir() / "dicom" / "mr_brain"
needs_mr_brain = pytest.mark.skipif(
    not MR_BRAIN.is_dir(), reason=f"real DICOM data not found at {MR_BRAIN} (set MEDMONAI_SHARED_DATA)"
)


@pytest.mark.shared_data
@needs_mr_brain
def test_real_mr_brain_matches_headers_and_pydicom_reader():
    series, problems = scan_dicom_folder(MR_BRAIN)
    assert problems == [] and len(series) == 4
    for s in series:
        files = sorted(os.listdir(s.folder))
        ds = pydicom.dcmread(os.path.join(s.folder, files[0]), stop_before_pixels=True)
        assert s.n_slices == len(files)
        img = _load(s.folder)
        assert tuple(img.shape) == (int(ds.Columns), int(ds.Rows), len(files))
        ps = [float(v) for v in ds.PixelSpacing]
        headers = [pydicom.dcmread(os.path.join(s.folder, f), stop_before_pixels=True) for f in files]
        iop = np.asarray(ds.ImageOrientationPatient, float)
        proj = np.sort([np.dot(np.asarray(h.ImagePositionPatient, float), np.cross(iop[:3], iop[3:])) for h in headers])
        np.testing.assert_allclose(img.meta["spacing"][:2], [ps[1], ps[0]], rtol=1e-6)
        assert img.meta["spacing"][2] == pytest.approx(np.median(np.diff(proj)), rel=1e-3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = LoadImage(reader=PydicomReader(), image_only=True)(s.folder)
        np.testing.assert_allclose(img.affine.numpy(), ref.affine.numpy(), atol=1e-6)
        np.testing.assert_array_equal(img.numpy(), ref.numpy())


@pytest.mark.shared_data
@needs_mr_brain
def test_real_mr_brain_matches_simpleitk():
    folder = MR_BRAIN / "Study3" / "11-T1post-18670"  # file names are not in slice order
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    ref = r.Execute()
    ref_arr = np.transpose(sitk.GetArrayFromImage(ref), (2, 1, 0)).astype(np.float32)  # [k, j, i] -> [i, j, k]
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(ref.GetDirection()).reshape(3, 3) @ np.diag(ref.GetSpacing())
    lps[:3, 3] = ref.GetOrigin()
    img = _load(str(folder))
    np.testing.assert_array_equal(img.numpy(), ref_arr)
    np.testing.assert_allclose(img.affine.numpy(), np.diag([-1, -1, 1, 1]) @ lps, atol=1e-3)


# ------------------------------------------------------------------ truncated pixel data (issue 21, item 4)


@pytest.mark.parametrize("shape, cut", [((6, 6, 3), 30), ((64, 64, 3), 3000), ((64, 64, 3), 8000)])
def test_truncated_pixel_data_is_found_whether_read_or_deferred(tmp_path, shape, cut):
    # 72 bytes of pixel data are read with the header, 8192 are deferred (defer_size): both must be checked
    s = write_series(tmp_path / "s", shape=shape)
    whole = s.files[1].read_bytes()
    s.files[1].write_bytes(whole[:-cut])
    expected = shape[0] * shape[1] * 2
    message = f"corrupt or truncated DICOM file: pixel data has {expected - cut} bytes, expected {expected}"
    with pytest.raises(DicomError, match=message) as e:
        scan_dicom_folder(s.folder, on_error="raise")
    assert str(s.files[1]) in str(e.value)
    series, problems = scan_dicom_folder(s.folder, on_error="skip")
    assert series == [] and any(p.file == str(s.files[1]) and message in p.reason for p in problems)


def test_decoding_a_truncated_file_names_the_cause_not_simpleitk(tmp_path):
    from medmonai.data.dicom import _decode_slice

    s = write_series(tmp_path / "s", shape=(64, 64, 2))
    s.files[0].write_bytes(s.files[0].read_bytes()[:-3000])
    with pytest.raises(DicomError, match="pixel data has 5192 bytes, expected 8192") as e:
        _decode_slice(str(s.files[0]), 1)
    assert str(s.files[0]) in str(e.value) and "ImageIO" not in str(e.value)


def test_a_fifo_in_a_dicom_folder_is_reported_not_opened(tmp_path):
    s = write_series(tmp_path / "s", shape=(6, 6, 3))
    os.mkfifo(tmp_path / "s" / "sub_pipe.dcm")  # the recursive scan lists it; opening it would block
    _, problems = scan_dicom_folder(s.folder, recursive=True, on_error="skip")
    assert any("FIFO" in p.reason and p.file.endswith("sub_pipe.dcm") for p in problems)
