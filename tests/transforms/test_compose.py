"""UntrackedCompose: same augmented values as Compose, plain tensors from the first random transform, flag restored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, MetaTensor, get_track_meta
from monai.transforms import Compose, EnsureChannelFirstd, Orientationd, ScaleIntensityd, Spacingd

from medmonai.transforms.augmentation import augmentation_preset
from medmonai.transforms.compose import UntrackedCompose, strip_meta


def _items(n: int, dims: int) -> list[dict]:
    rng = np.random.default_rng(0)
    size = (24, 20) if dims == 2 else (12, 10, 8)
    out = []
    for i in range(n):
        affine = np.diag([0.8, 1.2, 1.0, 1.0]) if dims == 3 else np.diag([0.8, 1.2, 1.0])
        # channel-first, as a reader + EnsureChannelFirstd give them (MetaTensor infers its spatial_ndim from this)
        pixels = torch.as_tensor(rng.random((1, *size)), dtype=torch.float32)
        img = MetaTensor(pixels, affine=torch.as_tensor(affine))
        mask = MetaTensor((img > 0.7).to(torch.uint8), affine=torch.as_tensor(affine))
        out.append({"image": img, "mask": mask, "label": i % 2, "subject": f"s{i}"})
    return out


def _chain(dims: int, cls: type, level: str) -> Compose:
    keys = ["image", "mask"]
    pre = [
        EnsureChannelFirstd(keys, channel_dim=0),
        # metadata-dependent: these need the MetaTensor affine of the deterministic part
        Orientationd(keys, axcodes="RAS" if dims == 3 else "RA"),
        Spacingd(keys, pixdim=[1.0] * dims, mode=["bilinear", "nearest"]),
        ScaleIntensityd("image"),
    ]
    chain = cls(pre + augmentation_preset(level, dims, keys="image", label_keys="mask"))
    chain.set_random_state(7)
    return chain


@pytest.mark.parametrize("dims,level", [(2, "light"), (2, "strong"), (3, "nnunet")])
def test_same_values_as_compose_and_plain_tensors(dims: int, level: str) -> None:
    tracked, untracked = _chain(dims, Compose, level), _chain(dims, UntrackedCompose, level)
    for item in _items(6, dims):
        a, b = tracked(dict(item)), untracked(dict(item))
        assert isinstance(a["image"], MetaTensor)
        assert type(b["image"]) is torch.Tensor and type(b["mask"]) is torch.Tensor
        torch.testing.assert_close(b["image"], a["image"].as_tensor(), rtol=0, atol=0)
        assert torch.equal(b["mask"], a["mask"].as_tensor()) and b["mask"].dtype == a["mask"].dtype
        assert (b["label"], b["subject"]) == (item["label"], item["subject"])
    assert get_track_meta()


def test_cache_dataset_holds_plain_tensors_and_matches() -> None:
    items = _items(4, 2)
    cached = CacheDataset(items, _chain(2, UntrackedCompose, "light"), progress=False)
    assert all(type(c["image"]) is torch.Tensor for c in cached._cache)
    reference = _chain(2, Compose, "light")
    for i in range(4):
        torch.testing.assert_close(cached[i]["image"], reference(dict(items[i]))["image"].as_tensor(), rtol=0, atol=0)
    batch = next(iter(DataLoader(cached, batch_size=4)))
    assert type(batch["image"]) is torch.Tensor and batch["image"].shape == (4, 1, 19, 24)


def test_no_random_transform_gives_plain_tensors_at_the_end() -> None:
    out = UntrackedCompose([EnsureChannelFirstd("image", channel_dim=0)])(dict(_items(1, 2)[0]))
    assert type(out["image"]) is torch.Tensor and out["image"].shape == (1, 24, 20)


def test_tracking_restored_after_an_error() -> None:
    def fail(d: dict) -> dict:
        assert not get_track_meta()  # the random part runs untracked
        raise RuntimeError("bad item")

    chain = UntrackedCompose([ScaleIntensityd("image"), fail])
    with pytest.raises(RuntimeError, match="applying transform") as err:
        chain({"image": MetaTensor(torch.rand(1, 4, 4))})
    assert "bad item" in str(err.value.__cause__)
    assert get_track_meta()


def test_flatten_keeps_the_class_and_strip_meta() -> None:
    inner = Compose([ScaleIntensityd("image")])
    flat = UntrackedCompose([inner, *augmentation_preset("light", 2)]).flatten()
    assert type(flat) is UntrackedCompose and len(flat.transforms) == 3
    m = MetaTensor(torch.ones(2))
    assert type(strip_meta(m)) is torch.Tensor
    assert [type(x["a"]) for x in strip_meta([{"a": m}, {"a": m}])] == [torch.Tensor, torch.Tensor]
    src = {"a": m, "b": 1}
    assert type(strip_meta(src)["a"]) is torch.Tensor and isinstance(src["a"], MetaTensor)
