"""``medmonai augment-preview`` and ``medmonai audit-synthetic`` on tiny datalists."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from medmonai.cli.main import main
from medmonai.data.datalist import make_datalist, write_datalist
from tests.metrics.test_synthetic import _image
from tests.transforms._helpers import write_png


def _datalist(folder, images, name, **extra):
    entries = [
        {"image": str(write_png(folder / f"{name}{i:02d}.png", img)), "label": i % 2, **extra}
        for i, img in enumerate(images)
    ]
    return write_datalist(folder / f"{name}.json", make_datalist({"training": entries}, ["a", "b"]))


def _images(rng, n):
    out = []
    for _ in range(n):
        img = (rng.random((28, 28)) * 50).astype(np.uint8)
        y, x = rng.integers(4, 18, 2)
        img[y : y + 8, x : x + 6] += 150
        out.append(img)
    return out


def test_augment_preview_writes_a_grid(tmp_path, capsys):
    dl = _datalist(tmp_path, _images(np.random.default_rng(0), 3), "img")
    out = tmp_path / "grid.png"
    rc = main(["augment-preview", str(dl), "--preset", "medium", "--dims", "2", "--n", "3", "--draws", "2"] + [
        "--out", str(out)])  # fmt: skip
    assert rc == 0 and "3 images" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 200


def test_audit_synthetic_flags_the_copy_and_can_fail(tmp_path, capsys):
    rng = np.random.default_rng(1)
    real = [_image(rng) for _ in range(16)]  # textured backgrounds with a random ellipse each
    synthetic = [_image(rng) for _ in range(4)] + [real[2].copy()]
    real_dl = _datalist(tmp_path / "real", real, "r")
    syn_dl = _datalist(tmp_path / "syn", synthetic, "s", synthetic=True)
    args = ["audit-synthetic", str(real_dl), str(syn_dl), "--out", str(tmp_path / "audit"), "--image-size", "32"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "FID" in text and "near-copies of training images: 1" in text and "r02.png" in text
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert [r["index"] for r in report["memorization"]["flagged"]] == [4]
    assert main(args + ["--fail-on-copies"]) == 1
