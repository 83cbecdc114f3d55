"""Class-conditional GAN training for small data sets (DiffAugment), and writing synthetic images with a datalist.

Training: :class:`ConditionalGanTrainer` is MONAI's :class:`~monai.engines.GanTrainer` (an Ignite engine: handlers,
events, state, checkpointing work as for every MONAI trainer) with a class-conditional iteration:

1. discriminator step(s): ``fake = G(z, y)`` for the labels ``y`` of the real batch (so fakes follow the class mix
   of the training data), ``loss_D(D(T(real), y), D(T(fake), y))``;
2. generator step: a new ``z``, ``loss_G(D(T(G(z, y)), y))``;
3. optional exponential moving average of the generator's weights (:func:`medmonai.networks.gan.ema_generator`).

``T`` is :class:`DiffAugment` (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS
2020): random colour (brightness, saturation, contrast), translation (up to 1/8 of the size, zero padding) and
cutout (a box of half the size set to zero), drawn independently per sample and applied to *both* real and fake
images before every discriminator call, in the D and the G step. Because ``T`` is differentiable, the generator
learns through it; because the discriminator never sees an un-augmented image, it cannot simply memorise the few
training images, which is what makes GANs collapse or leak training images on small data sets. Works in 2D and 3D.

Losses (``loss``): ``hinge`` (``relu(1 - D(real)) + relu(1 + D(fake))`` / ``-D(fake)``; Lim & Ye 2017, as in
SN-GAN/BigGAN) or ``nonsaturating`` (``softplus(-D(real)) + softplus(D(fake))`` / ``softplus(-D(fake))``;
Goodfellow et al. 2014). The iteration output holds ``g_loss``, ``d_loss``, ``d_real`` and ``d_fake`` (mean logits),
for MONAI's ``StatsHandler`` / ``TensorBoardStatsHandler``.

:class:`TensorBoardClassSamples` logs a grid of samples per class from fixed latents (the same ``z`` every time, so
the images show the training progress). :func:`save_generator` / :func:`load_generator` write and read the sampling
generator (atomic write; ``torch.load(weights_only=True)``); :func:`generate_synthetic` writes N images per class
(PNG for 2D, NIfTI for 3D) and a datalist whose entries carry ``synthetic: true``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.engines import GanTrainer
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from medmonai.data.datalist import load_datalist_file, make_datalist, write_datalist
from medmonai.data.synthetic import case_key
from medmonai.utils import PathLike, atomic_torch_save, atomic_write, latest_checkpoint

__all__ = [
    "DIFFAUGMENT_OPS",
    "GAN_LOSSES",
    "DiffAugment",
    "ConditionalGanTrainer",
    "TensorBoardClassSamples",
    "save_generator",
    "load_generator",
    "generator_checkpoint",
    "generate_synthetic",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ DiffAugment
def _rand(shape: Sequence[int], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator).to(device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=generator).to(x.device)


def _color(x: torch.Tensor, generator: torch.Generator | None, **_: Any) -> torch.Tensor:
    """Brightness (add U(-0.5, 0.5)), saturation (scale U(0, 2) around the channel mean), contrast (U(0.5, 1.5))."""
    b = x.shape[0]
    one = [b] + [1] * (x.ndim - 1)
    x = x + (_rand(one, x, generator) - 0.5)
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * (_rand(one, x, generator) * 2) + mean_c
    mean_all = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    return (x - mean_all) * (_rand(one, x, generator) + 0.5) + mean_all


def _translation(
    x: torch.Tensor, generator: torch.Generator | None, translation_ratio: float = 0.125, **_: Any
) -> torch.Tensor:
    """Shift every sample by an integer U{-r*n, ..., r*n} per axis, zero padding (a gather: differentiable)."""
    b = x.shape[0]
    for d in range(2, x.ndim):
        n = x.shape[d]
        s = int(n * translation_ratio + 0.5)
        if s == 0:
            continue
        shift = _randint(-s, s + 1, b, x, generator)
        src = torch.arange(n, device=x.device)[None, :] - shift[:, None]  # output position p reads p - shift
        valid = (src >= 0) & (src < n)
        view = [b] + [1] * (x.ndim - 1)
        view[d] = n
        index = src.clamp(0, n - 1).view(view).expand_as(x)
        x = torch.gather(x, d, index) * valid.view(view).to(x.dtype)
    return x


def _cutout(x: torch.Tensor, generator: torch.Generator | None, cutout_ratio: float = 0.5, **_: Any) -> torch.Tensor:
    """Zero a box of ``cutout_ratio`` of the size per axis at a random centre (per sample)."""
    b = x.shape[0]
    inside = torch.ones((b, *x.shape[2:]), dtype=torch.bool, device=x.device)
    for i, n in enumerate(x.shape[2:]):
        half = int(n * cutout_ratio + 0.5) / 2
        centre = _randint(0, n, b, x, generator)
        coord = torch.arange(n, device=x.device)[None, :]
        inside_d = (coord - centre[:, None]).abs() < half  # (b, n)
        view = [b] + [1] * (x.ndim - 2)
        view[i + 1] = n
        inside = inside & inside_d.view(view)
    return x * (~inside).unsqueeze(1).to(x.dtype)


#: The DiffAugment operations by policy name.
DIFFAUGMENT_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "color": _color,
    "translation": _translation,
    "cutout": _cutout,
}


class DiffAugment(torch.nn.Module):
    """Differentiable augmentation applied to every image the discriminator sees (real and fake alike).

    Args:
        policy: comma-separated operations of :data:`DIFFAUGMENT_OPS` (``color``, ``translation``, ``cutout``),
            applied in that order; ``""`` or ``"none"``: identity.
        translation_ratio: maximum shift as a fraction of the size per axis.
        cutout_ratio: cutout box size as a fraction of the size per axis.
    """

    def __init__(
        self, policy: str = "color,translation,cutout", translation_ratio: float = 0.125, cutout_ratio: float = 0.5
    ) -> None:
        super().__init__()
        names = [p.strip() for p in str(policy or "").split(",") if p.strip() and p.strip() != "none"]
        unknown = [p for p in names if p not in DIFFAUGMENT_OPS]
        if unknown:
            raise ValueError(f"unknown DiffAugment operation(s) {unknown}; valid: {list(DIFFAUGMENT_OPS)}")
        self.policy = names
        self.translation_ratio = float(translation_ratio)
        self.cutout_ratio = float(cutout_ratio)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch ``(B, C, *spatial)``; the random draws come from ``generator`` (default: torch's)."""
        for name in self.policy:
            x = DIFFAUGMENT_OPS[name](
                x, generator, translation_ratio=self.translation_ratio, cutout_ratio=self.cutout_ratio
            )
        return x

    def extra_repr(self) -> str:
        """The settings, shown in ``repr``."""
        policy = ",".join(self.policy) or "none"
        return f"policy={policy}, translation={self.translation_ratio}, cutout={self.cutout_ratio}"


# ----------------------------------------------------------------------------------------------------------- losses
def _hinge_d(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()


def _hinge_g(d_fake: torch.Tensor) -> torch.Tensor:
    return -d_fake.mean()


def _ns_d(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def _ns_g(d_fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-d_fake).mean()


#: ``name -> (discriminator loss(d_real, d_fake), generator loss(d_fake))`` on discriminator logits.
GAN_LOSSES: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "hinge": (_hinge_d, _hinge_g),
    "nonsaturating": (_ns_d, _ns_g),
}


# ---------------------------------------------------------------------------------------------------------- trainer
class ConditionalGanTrainer(GanTrainer):
    """MONAI ``GanTrainer`` with a class-conditional, DiffAugment-regularised iteration (see the module docstring).

    Args:
        device: torch device.
        max_epochs: epochs to train.
        train_data_loader: loader of dict batches with ``image_key`` (``(B, C, *spatial)`` in [-1, 1]) and
            ``label_key`` (class indices). Training data only: never validation or test images.
        generator: conditional generator ``G(z, y)``.
        discriminator: conditional discriminator ``D(x, y) -> (B,)`` logits.
        g_optimizer: generator optimizer.
        d_optimizer: discriminator optimizer.
        latent_dim: length of ``z``.
        loss: a key of :data:`GAN_LOSSES`.
        augment: :class:`DiffAugment` (or any callable on batches), a policy string, or None for none.
        g_ema: an ``AveragedModel`` of the generator (:func:`medmonai.networks.gan.ema_generator`), updated after every
            generator step; None: no EMA.
        epoch_length: iterations per epoch (default: one pass over the loader); small data sets re-iterate the loader.
        d_train_steps: discriminator steps per generator step.
        train_handlers: MONAI/Ignite handlers attached to the trainer.
        image_key: image key of the batches.
        label_key: class key of the batches.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        latent_dim: int = 64,
        loss: str = "hinge",
        augment: Callable[[torch.Tensor], torch.Tensor] | str | None = "color,translation,cutout",
        g_ema: torch.nn.Module | None = None,
        epoch_length: int | None = None,
        d_train_steps: int = 1,
        train_handlers: Sequence[Any] | None = None,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        if loss not in GAN_LOSSES:
            raise ValueError(f"unknown GAN loss {loss!r}; valid: {list(GAN_LOSSES)}")
        d_loss, g_loss = GAN_LOSSES[loss]
        super().__init__(
            device=torch.device(device),
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            g_network=generator,
            g_optimizer=g_optimizer,
            g_loss_function=g_loss,
            d_network=discriminator,
            d_optimizer=d_optimizer,
            d_loss_function=d_loss,
            epoch_length=epoch_length,
            d_train_steps=d_train_steps,
            latent_shape=int(latent_dim),
            train_handlers=train_handlers,
            decollate=False,
        )
        if augment is None or isinstance(augment, str):
            augment = DiffAugment(augment or "none")
        self.augment = augment
        self.g_ema = g_ema
        self.image_key = image_key
        self.label_key = label_key
        self.loss_name = loss

    def _iteration(self, engine: Engine, batchdata: Mapping[str, Any]) -> dict[str, float]:  # type: ignore[override]
        """One discriminator (``d_train_steps`` times) and one generator update on a batch of real images."""
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        device = engine.state.device
        real = torch.as_tensor(batchdata[self.image_key]).to(device=device, dtype=torch.float32)
        y = torch.as_tensor(batchdata[self.label_key]).to(device).long().view(-1)
        b = real.shape[0]
        g, d = self.g_network, self.d_network
        g.train()
        d.train()

        d_total = 0.0
        for _ in range(self.d_train_steps):
            with torch.no_grad():
                fake = g(torch.randn(b, self.latent_shape, device=device), y)
            self.d_optimizer.zero_grad(set_to_none=self.optim_set_to_none)
            d_real = d(self.augment(real), y)
            d_fake = d(self.augment(fake), y)
            d_loss = self.d_loss_function(d_real, d_fake)
            d_loss.backward()
            self.d_optimizer.step()
            d_total += float(d_loss.item())

        requires = [p.requires_grad for p in d.parameters()]
        for p in d.parameters():
            p.requires_grad_(False)  # the generator step needs gradients through D, not of D
        try:
            self.g_optimizer.zero_grad(set_to_none=self.optim_set_to_none)
            fake = g(torch.randn(b, self.latent_shape, device=device), y)
            g_loss = self.g_loss_function(d(self.augment(fake), y))
            g_loss.backward()
            self.g_optimizer.step()
        finally:
            for p, r in zip(d.parameters(), requires):
                p.requires_grad_(r)
        if self.g_ema is not None:
            self.g_ema.update_parameters(g)
        return {
            "g_loss": float(g_loss.item()),
            "d_loss": d_total / max(self.d_train_steps, 1),
            "d_real": float(d_real.detach().mean().item()),
            "d_fake": float(d_fake.detach().mean().item()),
        }


# ------------------------------------------------------------------------------------------------------ TensorBoard
def _to_display(images: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) in [-1, 1] -> (N, 1, H, W) in [0, 1]: first channel, central slice of 3D, rows = axis 1."""
    x = images.detach().float().cpu()[:, :1]
    if x.ndim == 5:
        x = x[..., x.shape[-1] // 2]
    return ((x + 1) / 2).clamp(0, 1).transpose(-1, -2)


def _sampling_device(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class TensorBoardClassSamples:
    """Log ``n_per_class`` generated images per class (tag ``<tag>/<class>``) every ``interval`` epochs.

    The latents are fixed at construction (``seed``), so successive images show how the generator evolves.

    Args:
        generator: the generator to sample from (the EMA generator when there is one).
        num_classes: number of classes.
        latent_dim: length of ``z``.
        class_names: names for the tags (default ``class_0``...).
        n_per_class: images per class.
        summary_writer: a ``SummaryWriter``; if None, one is created in ``log_dir``.
        log_dir: TensorBoard folder when no writer is given.
        tag: tag prefix.
        interval: log every ``interval`` epochs.
        seed: seed of the fixed latents.
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        num_classes: int,
        latent_dim: int = 64,
        class_names: Sequence[str] | None = None,
        n_per_class: int = 8,
        summary_writer: Any = None,
        log_dir: str = "./runs",
        tag: str = "samples",
        interval: int = 1,
        seed: int = 0,
    ) -> None:
        if summary_writer is None:
            summary_writer = SummaryWriter(log_dir=log_dir)
        self.writer = summary_writer
        self.generator = generator
        self.class_names = [str(c) for c in class_names] if class_names else [f"class_{c}" for c in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.z = torch.randn(num_classes * n_per_class, latent_dim, generator=torch.Generator().manual_seed(seed))
        self.y = torch.arange(num_classes).repeat_interleave(n_per_class)
        self.n_per_class = n_per_class
        self.tag = tag
        self.interval = interval

    def attach(self, engine: Engine) -> None:
        """Log at the end of every ``interval``-th epoch."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def samples(self) -> torch.Tensor:
        """The generated images ``(num_classes * n_per_class, C, *spatial)`` for the fixed latents (eval mode)."""
        g = self.generator
        was_training = g.training
        g.eval()
        try:
            with torch.no_grad():
                dev = _sampling_device(g)
                return g(self.z.to(dev), self.y.to(dev)).cpu()
        finally:
            g.train(was_training)

    def __call__(self, engine: Engine) -> None:
        """Write one image grid per class."""
        images = _to_display(self.samples())
        for c, name in enumerate(self.class_names):
            block = images[c * self.n_per_class : (c + 1) * self.n_per_class]
            self.writer.add_images(f"{self.tag}/{name}", block, engine.state.epoch, dataformats="NCHW")
        self.writer.flush()


# ------------------------------------------------------------------------------------------ generator files, sampling
def _plain(module: torch.nn.Module) -> torch.nn.Module:
    """The generator inside an ``AveragedModel`` / DDP wrapper."""
    while hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
        module = module.module
    return module


def save_generator(generator: torch.nn.Module, path: PathLike) -> Path:
    """Atomically save the (EMA-averaged) generator's state dict: what :func:`load_generator` reads.

    Args:
        generator: the generator, or its ``AveragedModel`` (the averaged weights are saved).
        path: destination ``.pt`` file.
    """
    out = atomic_torch_save(_plain(generator).state_dict(), path)  # CPU tensors
    logger.info(f"generator saved to {out}")
    return out


def generator_checkpoint(ckpt_dir: PathLike, name: str = "generator.pt") -> str:
    """The generator file of a training run.

    ``ckpt_dir/generator.pt`` (written when training completes), else the newest complete ``checkpoint_epoch=N.pt``
    (an interrupted run).

    Raises:
        FileNotFoundError: when neither exists.
    """
    final = Path(ckpt_dir) / name
    if final.is_file():
        return str(final)
    latest = latest_checkpoint(str(ckpt_dir))
    if latest is None:
        raise FileNotFoundError(f"{ckpt_dir}: no {name} and no checkpoint_epoch=*.pt; train the GAN first")
    logger.warning(f"{final} does not exist (training not completed); using {latest}")
    return latest


def load_generator(generator: torch.nn.Module, checkpoint: PathLike) -> torch.nn.Module:
    """Load generator weights with ``torch.load(weights_only=True)``.

    The file is :func:`save_generator`'s, or a training checkpoint (its ``g_ema`` entry when present, else
    ``generator``).

    Returns:
        The generator (in eval mode).
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and ("g_ema" in state or "generator" in state):
        if "g_ema" in state:
            state = {k[len("module.") :]: v for k, v in state["g_ema"].items() if k.startswith("module.")}
        else:
            state = state["generator"]
    target = _plain(generator)
    target.load_state_dict(state)
    return target.eval()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "class"


def _write_png(path: Path, image01: np.ndarray) -> None:
    pixels = np.round(np.clip(image01, 0, 1) * 255).astype(np.uint8).T  # arrays are [i, j]; PNG rows are j
    atomic_write(path, lambda tmp: Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG"))


def _write_nifti(path: Path, image01: np.ndarray, spacing: Sequence[float] | None) -> None:
    affine = np.eye(4)
    if spacing is not None:
        affine[:3, :3] = np.diag([float(s) for s in spacing][:3])
    img = nib.Nifti1Image(np.clip(image01, 0, 1).astype(np.float32), affine)
    atomic_write(path, lambda tmp: nib.save(img, tmp), suffix="".join(path.suffixes[-2:]))


def generate_synthetic(
    generator: torch.nn.Module,
    out_dir: PathLike,
    classes: Sequence[str],
    n_per_class: int | Sequence[int] | Mapping[str, int] = 100,
    latent_dim: int | None = None,
    checkpoint: PathLike | None = None,
    source_datalist: PathLike | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    spacing: Sequence[float] | None = None,
    name: str = "",
    training_entries: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``n_per_class`` generated images per class and a datalist of them.

    Images go to ``out_dir/images/<class>/synthetic-<class>-<i>.png`` (2D, 8-bit grey: ``[-1, 1]`` -> 0..255) or
    ``.nii.gz`` (3D, float32 in [0, 1], affine ``diag(spacing)``), written atomically; the datalist
    ``out_dir/datalist.json`` (atomic) has the source's ``classes`` and one ``training`` entry per image with
    ``image``, ``label``, ``subject`` (``synthetic-<class>-<i>``) and ``synthetic: true``; top-level fields record the
    source datalist, the generator file and the seed. The datalist is meant to be *added* to a real training split,
    never used as validation or test data.

    Args:
        generator: the conditional generator (its weights from ``checkpoint`` when given).
        out_dir: output folder.
        classes: class names (index order, as in the source datalist).
        n_per_class: images per class: one number, one per class (list), or ``{class name: n}``.
        latent_dim: length of ``z`` (default: ``generator.latent_dim``).
        checkpoint: generator weights (see :func:`load_generator`); None: use ``generator`` as it is.
        source_datalist: the real datalist the GAN was trained on (recorded).
        seed: seed of the latents (the same seed gives the same images).
        batch_size: images per forward pass.
        device: torch device.
        spacing: voxel spacing written into 3D NIfTI headers (default 1).
        name: data set name (default ``<source name>_synthetic``).
        training_entries: the real entries the GAN was trained on; their case ids (see
            :func:`medmonai.data.synthetic.case_key`) are recorded as ``gan_training_cases``, which
            :func:`medmonai.data.synthetic.add_synthetic` checks against validation and test cases.

    Returns:
        The datalist path.
    """
    out = Path(out_dir)
    classes = [str(c) for c in classes]
    if isinstance(n_per_class, Mapping):
        unknown = sorted(set(n_per_class) - set(classes))
        if unknown:
            raise ValueError(f"n_per_class names unknown classes {unknown}; classes: {classes}")
        counts = [int(n_per_class.get(c, 0)) for c in classes]
    elif isinstance(n_per_class, int | np.integer):
        counts = [int(n_per_class)] * len(classes)
    else:
        counts = [int(n) for n in n_per_class]
        if len(counts) != len(classes):
            raise ValueError(f"n_per_class has {len(counts)} values for {len(classes)} classes")
    if any(n < 0 for n in counts):
        raise ValueError(f"n_per_class must be >= 0, got {counts}")
    if checkpoint is not None:
        generator = load_generator(generator, checkpoint)
    g = _plain(generator).to(device).eval()
    latent = int(latent_dim or getattr(g, "latent_dim", 64))
    if getattr(g, "num_classes", len(classes)) != len(classes):
        raise ValueError(f"the generator has {g.num_classes} classes, the class list {len(classes)}")
    rng = torch.Generator().manual_seed(int(seed))
    entries: list[dict[str, Any]] = []
    dims = None
    for c, (cls, n) in enumerate(zip(classes, counts)):
        safe = _safe_name(cls)
        width = max(4, len(str(max(n - 1, 0))))
        for start in range(0, n, int(batch_size)):
            m = min(int(batch_size), n - start)
            z = torch.randn(m, latent, generator=rng)
            with torch.no_grad():
                x = g(z.to(device), torch.full((m,), c, dtype=torch.long, device=device)).float().cpu()
            x01 = ((x[:, 0] + 1) / 2).numpy()
            dims = x01.ndim - 1
            for k in range(m):
                i = start + k
                subject = f"synthetic-{safe}-{i:0{width}d}"
                if dims == 2:
                    path = out / "images" / safe / f"{subject}.png"
                    _write_png(path, x01[k])
                else:
                    path = out / "images" / safe / f"{subject}.nii.gz"
                    _write_nifti(path, x01[k], spacing)
                entries.append({"image": str(path), "label": c, "subject": subject, "synthetic": True})
    src_name = ""
    if source_datalist is not None and Path(source_datalist).is_file():
        src_name = str(load_datalist_file(source_datalist).get("name", ""))
    dims = dims or int(getattr(g, "spatial_dims", 2))
    datalist = make_datalist(
        {"training": entries},
        classes=classes,
        name=name or f"{src_name or 'gan'}_synthetic",
        description=(
            f"synthetic images from a class-conditional GAN (medmonai.engines.gan), {dict(zip(classes, counts))} per "
            "class; for training only, never for validation or testing"
        ),
        tensorImageSize=f"{dims}D",
        synthetic=True,
        source_datalist=str(source_datalist) if source_datalist is not None else None,
        generator_checkpoint=str(checkpoint) if checkpoint is not None else None,
        seed=int(seed),
    )
    if training_entries is not None:
        datalist["gan_training_cases"] = sorted({case_key(e) for e in training_entries})
    path = write_datalist(out / "datalist.json", datalist)
    logger.info(f"wrote {sum(counts)} synthetic images and {path}")
    return path
