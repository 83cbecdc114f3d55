from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from medmonai.transforms.io import LoadMedicalImaged, MedicalImageReader, load_image_transforms, reader_name_for
from medmonai.utils import shared_data_dir
from tests.transforms._helpers import error_chain as _chain
from tests.transforms._helpers import write_dicom_series, write_nifti, write_png


def _load(path, **kw):
    return Compose(load_image_transforms("image", **kw))({"image": str(path)})["image"]


def test_reader_selection_per_type(tmp_path):
    vol = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    files = {
        "a.nii": write_nifti(tmp_path / "a.nii", vol, np.eye(4)),
        "a.nii.gz": write_nifti(tmp_path / "a.nii.gz", vol, np.eye(4)),
        "a.npy": tmp_path / "a.npy",
    }
    np.save(files["a.npy"], vol)
    grey = (np.arange(12).reshape(3, 4) * 20).astype(np.uint8)
    for ext in ("png", "jpg", "jpeg", "bmp", "tif", "tiff"):
        files[f"g.{ext}"] = write_png(tmp_path / f"g.{ext}", grey)
    dcm = write_dicom_series(tmp_path / "series", np.zeros((4, 3, 2), np.int16))
    nosuffix = tmp_path / "IM0001"
    nosuffix.write_bytes(dcm[0].read_bytes())

    expected = {"a.nii": "NibabelReader", "a.nii.gz": "NibabelReader", "a.npy": "NumpyReader"}
    expected |= {f"g.{e}": "PILReader" for e in ("png", "jpg", "jpeg", "bmp", "tif", "tiff")}
    for name, path in files.items():
        assert reader_name_for(path) == expected[name], name
    assert reader_name_for(tmp_path / "series") == "DicomSeriesReader"  # folder
    assert reader_name_for(dcm[0]) == "DicomSeriesReader"  # .dcm file
    assert reader_name_for([str(f) for f in dcm]) == "DicomSeriesReader"  # list of files
    assert reader_name_for(nosuffix) == "DicomSeriesReader"  # DICM magic, no suffix
    # every type loads through the same transform, with the expected array
    assert np.array_equal(_load(files["a.nii.gz"])[0].numpy(), vol)
    assert np.array_equal(_load(files["a.npy"])[0].numpy(), vol)
    assert np.array_equal(_load(files["g.png"])[0].numpy(), grey.T)  # arr[i, j] = pixel[row j, col i]
    assert tuple(_load(tmp_path / "series").shape) == (1, 4, 3, 2)


def test_load_transforms_are_monai_loadimaged():
    xs = load_image_transforms("image", mask_keys="mask")
    assert isinstance(xs[0], LoadImaged) and isinstance(xs[0], LoadMedicalImaged)
    assert isinstance(xs[1], LoadImaged)
    assert isinstance(xs[-1], EnsureChannelFirstd)
    assert len(load_image_transforms("image", ensure_channel_first=False)) == 1


def test_unsupported_and_missing_files_raise_with_name(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt.*unsupported.*NIfTI"):
        MedicalImageReader().select(txt)
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        MedicalImageReader().select(tmp_path / "missing.nii.gz")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(RuntimeError) as e:
        _load(bad)
    assert "broken.nii.gz" in _chain(e.value)
    assert MedicalImageReader().verify_suffix(txt) is False


def test_colour_png_channels_and_grey_conversion(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    path = write_png(tmp_path / "c.png", rgb)
    img = _load(path)
    assert tuple(img.shape) == (3, 7, 5)
    assert np.array_equal(img[1].numpy(), rgb[..., 1].T)
    grey = _load(path, channels=1)
    from PIL import Image

    expected = np.asarray(Image.open(path).convert("L")).T
    assert tuple(grey.shape) == (1, 7, 5)
    assert np.array_equal(grey[0].numpy(), expected)
    # a 16-bit grey PNG is not touched by channels=1 (no clipping to 8 bits)
    g16 = (np.arange(20).reshape(4, 5) * 3000).astype(np.uint16)
    p16 = write_png(tmp_path / "g16.png", g16)
    assert np.array_equal(_load(p16, channels=1)[0].numpy(), g16.T.astype(np.float32))


def test_mask_key_is_optional_but_image_key_is_not(tmp_path):
    vol = np.ones((3, 3, 3), np.float32)
    img = write_nifti(tmp_path / "i.nii.gz", vol, np.eye(4))
    msk = write_nifti(tmp_path / "m.nii.gz", vol.astype(np.uint8), np.eye(4))
    t = Compose(load_image_transforms("image", mask_keys="mask"))
    assert set(t({"image": str(img)})) == {"image"}
    out = t({"image": str(img), "mask": str(msk)})
    assert tuple(out["mask"].shape) == (1, 3, 3, 3)
    with pytest.raises(RuntimeError) as e:
        t({"mask": str(msk)})
    assert "KeyError" in _chain(e.value) and "image" in _chain(e.value)


def test_dicom_series_values_affine_and_modality(tmp_path):
    vol = np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2) + 1000
    write_dicom_series(tmp_path / "s", vol, spacing=(0.7, 0.8, 2.5), intercept=-1024)
    img = _load(tmp_path / "s")
    assert np.allclose(img[0].numpy(), vol - 1024.0)  # HU via slope/intercept
    assert np.allclose(np.abs(np.diag(img.affine.numpy())[:3]), (0.7, 0.8, 2.5))
    assert img.meta["Modality"] == "CT"


@pytest.mark.shared_data
def test_real_mr_dicom_series_loads_through_dispatcher():
    folder = shared_data_dir() / "dicom" / "mr_brain" / "Study1" / "13_HCropVolume"
    if not folder.is_dir():
        pytest.skip(f"real DICOM series not found at {folder} (set MEDMONAI_SHARED_DATA to the shared data folder)")
    assert reader_name_for(folder) == "DicomSeriesReader"
    img = _load(folder)
    assert img.ndim == 4 and img.shape[0] == 1 and img.shape[3] == 32  # 32 slices
    assert img.meta["Modality"] == "MR"
    assert float(img.std()) > 0
