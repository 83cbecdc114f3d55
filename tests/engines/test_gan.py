"""GAN engine: DiffAugment, the conditional trainer, TensorBoard samples, generator files and synthetic datalists."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader

from medmonai.data.datalist import check_entries, load_datalist, load_datalist_file
from medmonai.engines.gan import (
    ConditionalGanTrainer,
    DiffAugment,
    TensorBoardClassSamples,
    generate_synthetic,
    generator_checkpoint,
    load_generator,
    save_generator,
)
from medmonai.networks.gan import ConditionalGenerator, ProjectionDiscriminator, ema_generator


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------------ DiffAugment
@pytest.mark.parametrize("dims", [2, 3])
def test_diffaugment_is_differentiable(dims):
    aug = DiffAugment()
    x = torch.rand(2, 1, *([6] * dims), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: aug(t, _gen(0)), (x,), eps=1e-6, atol=1e-5)
    out = aug(x, _gen(1))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diffaugment_treats_real_and_fake_identically():
    """The transformation depends only on the random draws, not on where the batch comes from (data or G)."""
    aug = DiffAugment()
    real = torch.rand(4, 1, 16, 16)
    fake = real.clone().requires_grad_(True)  # same pixels, but a "generated" tensor in the graph
    assert torch.equal(aug(real, _gen(3)), aug(fake, _gen(3)).detach())


@pytest.mark.parametrize("policy", ["translation", "cutout", "color"])
def test_diffaugment_operations(policy):
    x = torch.rand(8, 1, 16, 16) + 1.0  # strictly positive, so that zeroed pixels are visible
    out = DiffAugment(policy)(x, _gen(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    if policy == "cutout":
        zero_fraction = (out == 0).float().mean(dim=(1, 2, 3))
        assert ((zero_fraction > 0.05) & (zero_fraction <= 0.3)).all()  # up to a quarter of the image, clipped at edges
    if policy == "translation":
        assert (out == 0).any() and torch.isin(out[out != 0], x).all()  # pixels moved, zero padding
    assert torch.equal(DiffAugment("none")(x), x)
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        DiffAugment("rotate")


# ---------------------------------------------------------------------------------------------------------- trainer
class _Spy(torch.nn.Module):
    """Records the batches the discriminator is shown (through the augmentation)."""

    def __init__(self) -> None:
        super().__init__()
        self.aug = DiffAugment()
        self.calls: list[tuple[bool, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.requires_grad, x.shape[0]))
        return self.aug(x)


def _tiny(dims=2, size=16, n=12):
    g = ConditionalGenerator(dims, size, num_classes=2, latent_dim=8, channels=4)
    d = ProjectionDiscriminator(dims, size, num_classes=2, channels=4)
    data = [{"image": torch.rand(1, *([size] * dims)) * 2 - 1, "label": i % 2} for i in range(n)]
    return g, d, DataLoader(data, batch_size=4, shuffle=True)


def test_trainer_updates_both_networks_and_augments_real_and_fake(tmp_path):
    torch.manual_seed(0)
    g, d, loader = _tiny()
    ema = ema_generator(g, 0.9)
    spy = _Spy()
    g0 = [p.detach().clone() for p in g.parameters()]
    d0 = [p.detach().clone() for p in d.parameters()]
    trainer = ConditionalGanTrainer(
        "cpu", 2, loader, g, d, torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3),
        latent_dim=8, augment=spy, g_ema=ema, epoch_length=2,
    )  # fmt: skip
    trainer.run()
    assert trainer.state.iteration == 4
    assert set(trainer.state.output) == {"g_loss", "d_loss", "d_real", "d_fake"}
    assert all(np.isfinite(v) for v in trainer.state.output.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, g.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, d.parameters()))
    assert int(ema.n_averaged) == 4
    # per iteration: D step sees real then fake (detached), G step sees fake (in the graph); same augmentation object
    assert spy.calls == [(False, 4), (False, 4), (True, 4)] * 4


def test_trainer_nonsaturating_and_bad_loss():
    g, d, loader = _tiny()
    opt = (torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters()))
    trainer = ConditionalGanTrainer("cpu", 1, loader, g, d, *opt, latent_dim=8, loss="nonsaturating", epoch_length=1)
    trainer.run()
    assert trainer.state.output["d_loss"] > 0
    with pytest.raises(ValueError, match="unknown GAN loss"):
        ConditionalGanTrainer("cpu", 1, loader, g, d, *opt, loss="wasserstein")


def test_class_samples_logged_per_class(tmp_path):
    from ignite.engine import Engine
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    g, _, _ = _tiny()
    handler = TensorBoardClassSamples(g, 2, 8, class_names=["benign", "malignant"], n_per_class=3, log_dir=tmp_path)
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([0], max_epochs=1)
    acc = EventAccumulator(str(next(tmp_path.glob("events.out.tfevents.*"))))
    acc.Reload()
    assert {"samples/benign", "samples/malignant"} <= set(acc.Tags()["images"])
    assert torch.equal(handler.samples(), handler.samples())  # fixed latents, eval mode
    assert g.training  # mode restored


# ----------------------------------------------------------------------------------------------- files, generation
def test_save_load_and_checkpoint_lookup(tmp_path):
    g, _, _ = _tiny()
    ema = ema_generator(g, 0.5)
    ema.update_parameters(g)
    with pytest.raises(FileNotFoundError):
        generator_checkpoint(tmp_path)
    # an interrupted run: only a training checkpoint with the EMA generator
    torch.save({"g_ema": ema.state_dict(), "generator": g.state_dict()}, tmp_path / "checkpoint_epoch=3.pt")
    assert generator_checkpoint(tmp_path).endswith("checkpoint_epoch=3.pt")
    other = ConditionalGenerator(2, 16, num_classes=2, latent_dim=8, channels=4)
    load_generator(other, generator_checkpoint(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), ema.module.state_dict().values()))
    save_generator(ema, tmp_path / "generator.pt")
    assert generator_checkpoint(tmp_path).endswith("generator.pt")
    assert set(torch.load(tmp_path / "generator.pt", weights_only=True)) == set(g.state_dict())


def test_generate_2d_png_datalist_round_trip(tmp_path):
    from medmonai.transforms.io import LoadMedicalImaged

    torch.manual_seed(0)
    g, _, _ = _tiny(size=16)
    path = generate_synthetic(g, tmp_path / "syn", ["benign", "malignant"], n_per_class=[3, 2], seed=1)
    raw = load_datalist_file(path)
    assert raw["synthetic"] is True and raw["classes"] == ["benign", "malignant"] and raw["tensorImageSize"] == "2D"
    entries = load_datalist(path)
    assert check_entries(entries, raw["classes"]) == []
    assert [e["label"] for e in entries] == [0, 0, 0, 1, 1]
    assert all(e["synthetic"] is True for e in entries)
    assert entries[0]["subject"] == "synthetic-benign-0000" and entries[-1]["subject"] == "synthetic-malignant-0001"
    assert len({e["subject"] for e in entries}) == 5
    # the file holds the generator's image: same orientation, [-1, 1] -> 0..255
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = (g.eval()(z, torch.zeros(3, dtype=torch.long))[:, 0] + 1) / 2 * 255
    loaded = LoadMedicalImaged("image", ensure_channel_first=True)({"image": entries[0]["image"]})["image"][0]
    assert loaded.shape == (16, 16)
    np.testing.assert_allclose(np.asarray(loaded), expected[0].numpy(), atol=0.51)
    # the same seed gives the same images
    again = generate_synthetic(g, tmp_path / "again", ["benign", "malignant"], n_per_class=[3, 2], seed=1)
    assert (tmp_path / "again" / "images" / "benign" / "synthetic-benign-0002.png").read_bytes() == (
        tmp_path / "syn" / "images" / "benign" / "synthetic-benign-0002.png"
    ).read_bytes()
    assert load_datalist_file(again)["numTraining"] == 5


def test_generate_3d_nifti(tmp_path):
    import nibabel as nib

    g, _, _ = _tiny(dims=3, size=16)
    path = generate_synthetic(g, tmp_path, ["a", "b"], n_per_class={"b": 2}, spacing=[2.0, 2.0, 3.0])
    entries = load_datalist(path)
    assert [e["label"] for e in entries] == [1, 1]
    assert check_entries(entries, ["a", "b"], require_all_classes=False) == []
    img = nib.load(entries[0]["image"])
    assert img.shape == (16, 16, 16) and np.allclose(img.header.get_zooms(), (2.0, 2.0, 3.0))
    assert 0.0 <= float(img.get_fdata().min()) and float(img.get_fdata().max()) <= 1.0
    with pytest.raises(ValueError, match="unknown classes"):
        generate_synthetic(g, tmp_path, ["a", "b"], n_per_class={"c": 2})
