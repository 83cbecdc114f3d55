from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from monai.data import Dataset
from PIL import Image

from medmonai.engines.features import describe_transform, extract_features, features_cache_key
from medmonai.transforms.preprocessing import build_preprocessing


class TinyNet(torch.nn.Module):
    """A tiny conv net that counts its forward calls (to prove cache hits do not run it)."""

    def __init__(self, seed: int = 0, channels: int = 4) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(1, channels, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(channels)
        self.calls = 0
        self.images_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images_seen += x.shape[0]
        return torch.relu(self.bn(self.conv(x)))  # (B, C, H, W): pooled by extract_features


class WithFeatures(TinyNet):
    """Has a ``features`` method (as medmonai.networks' Classifier): it must be used instead of forward."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.relu(self.conv(x)).amax(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("forward must not be called when the model has features()")


@pytest.fixture
def entries(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for i in range(6):
        img = (rng.random((40, 36)) * 120 + (100 if i % 2 else 0)).astype(np.uint8)
        path = tmp_path / "png" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(path)
        out.append({"image": str(path), "label": i % 2, "subject": f"s{i // 2}"})
    return out


def _transform(size: int = 32):
    return build_preprocessing(keys=("image",), spatial_dims=2, spatial_size=(size, size), normalization="scale255")


def test_shape_dtype_order_and_determinism(entries):
    model = TinyNet()
    f1, out = extract_features(model, entries, _transform(), batch_size=4, progress=False)
    assert f1.shape == (6, 4) and f1.dtype == np.float32
    assert [e["image"] for e in out] == [e["image"] for e in entries]
    assert out[0] is not entries[0] and out[0] == entries[0]
    assert model.images_seen == 6
    f2, _ = extract_features(model, entries, _transform(), batch_size=5, progress=False)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    # the brighter (odd) images give different features than the dark ones
    assert not np.allclose(f1[0], f1[1])


def test_matches_manual_forward_in_eval_mode(entries):
    model = TinyNet()
    model.train()
    feats, _ = extract_features(model, entries[:2], _transform(), progress=False)
    assert model.training, "the previous training mode is restored"
    model.eval()
    t = _transform()
    x = torch.stack([torch.as_tensor(t(e)["image"]) for e in entries[:2]])
    with torch.no_grad():
        expected = model(x).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    # eval mode: BatchNorm running statistics were not updated by the extraction
    assert int(model.bn.num_batches_tracked) == 0


def test_features_method_and_pooling(entries):
    feats, _ = extract_features(WithFeatures(), entries, _transform(), progress=False)
    assert feats.shape == (6, 4)
    flat, _ = extract_features(TinyNet(), entries, _transform(16), pool="flatten", progress=False)
    assert flat.shape == (6, 4 * 16 * 16)
    with pytest.raises(ValueError, match="pool"):
        extract_features(TinyNet(), entries, _transform(), pool="max", progress=False)


def test_monai_dataset_input(entries):
    model = TinyNet()
    a, _ = extract_features(model, entries, _transform(), progress=False)
    b, out = extract_features(model, Dataset(entries, transform=_transform()), progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert len(out) == 6
    with pytest.raises(ValueError, match="own transform"):
        extract_features(model, Dataset(entries, transform=_transform()), _transform(), progress=False)


def test_bad_inputs(entries, tmp_path):
    with pytest.raises(ValueError, match="img0.png.*no transform"):
        extract_features(TinyNet(), entries, None, progress=False)
    with pytest.raises(ValueError, match="no 'image' key"):
        extract_features(TinyNet(), [{"label": 0}], _transform(), progress=False)
    with pytest.raises(TypeError):
        extract_features(TinyNet(), "not a list", _transform(), progress=False)
    # images of different sizes cannot be batched: a clear error rather than a crash deep in torch
    t = build_preprocessing(keys=("image",), spatial_dims=2, normalization="scale255")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "small.png")
    mixed = entries[:1] + [{"image": str(tmp_path / "small.png")}]
    with pytest.raises(ValueError, match="different shapes"):
        extract_features(TinyNet(), mixed, t, batch_size=2, progress=False)


def test_cache_hit_skips_model_and_invalidation(entries, tmp_path, caplog):
    cache = tmp_path / "cache"
    model = TinyNet()
    f1, _ = extract_features(model, entries, _transform(), cache_dir=cache, progress=False)
    assert model.calls > 0
    files = list(cache.glob("features_*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as z:
        np.testing.assert_array_equal(z["features"], f1)

    # same model, entries and (re-built) transform: loaded, the model is not run
    model.calls = 0
    with caplog.at_level(logging.INFO, logger="medmonai.engines.features"):
        f2, out = extract_features(model, entries, _transform(), cache_dir=cache, progress=False)
    assert model.calls == 0
    np.testing.assert_array_equal(f1, f2)
    assert [e["image"] for e in out] == [e["image"] for e in entries]
    assert "cache hit" in caplog.text

    # a copy of the model with the same weights also hits
    twin = TinyNet()
    extract_features(twin, entries, _transform(), cache_dir=cache, progress=False)
    assert twin.calls == 0

    # changed weights -> recomputed
    with torch.no_grad():
        model.conv.weight[0, 0, 0, 0] += 1.0
    f3, _ = extract_features(model, entries, _transform(), cache_dir=cache, progress=False)
    assert model.calls > 0 and not np.allclose(f1, f3)

    # changed entry list -> recomputed
    model.calls = 0
    f4, _ = extract_features(model, entries[:-1], _transform(), cache_dir=cache, progress=False)
    assert model.calls > 0 and f4.shape == (5, 4)

    # a different transform -> recomputed
    model.calls = 0
    extract_features(model, entries, _transform(28), cache_dir=cache, progress=False)
    assert model.calls > 0

    # an image file rewritten in place (new content and mtime) -> recomputed
    model.calls = 0
    extract_features(model, entries, _transform(), cache_dir=cache, progress=False)
    assert model.calls == 0
    path = entries[0]["image"]
    Image.fromarray(np.full((40, 36), 255, np.uint8)).save(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    f5, _ = extract_features(model, entries, _transform(), cache_dir=cache, progress=False)
    assert model.calls > 0 and not np.allclose(f5[0], f3[0])
    assert len(list(cache.glob("features_*.npz"))) == 5
    assert not list(cache.glob(".*tmp*")), "no temporary files left behind"


def test_corrupt_cache_is_recomputed(entries, tmp_path):
    cache = tmp_path / "cache"
    model = TinyNet()
    f1, _ = extract_features(model, entries, _transform(), cache_dir=cache, progress=False)
    (path,) = cache.glob("features_*.npz")
    path.write_bytes(b"garbage")
    model.calls = 0
    f2, _ = extract_features(model, entries, _transform(), cache_dir=cache, progress=False)
    assert model.calls > 0
    np.testing.assert_allclose(f1, f2, rtol=1e-6)
    with np.load(path, allow_pickle=False) as z:  # rewritten
        assert z["features"].shape == (6, 4)


def test_callable_model_needs_id_to_cache(entries, tmp_path):
    net = TinyNet()

    def fn(x):
        return net(x)

    feats, _ = extract_features(fn, entries, _transform(), progress=False)
    assert feats.shape == (6, 4)
    with pytest.raises(ValueError, match="model_id"):
        extract_features(fn, entries, _transform(), cache_dir=tmp_path, progress=False)
    extract_features(fn, entries, _transform(), cache_dir=tmp_path, model_id="tiny-v1", progress=False)
    net.calls = 0
    extract_features(fn, entries, _transform(), cache_dir=tmp_path, model_id="tiny-v1", progress=False)
    assert net.calls == 0


def test_cache_key_ignores_labels_and_transform_use(entries):
    model = TinyNet()
    t = _transform()
    before = describe_transform(t)
    t(entries[0])  # readers created lazily on first use must not change the identity
    assert describe_transform(t) == before
    relabelled = [dict(e, label=1 - e["label"]) for e in entries]
    k1 = features_cache_key(model, entries, before, None, "avg")
    assert k1 == features_cache_key(model, relabelled, before, None, "avg")
    assert k1 != features_cache_key(model, entries, before, None, "flatten")
    assert k1 != features_cache_key(model, entries[::-1], before, None, "avg")
