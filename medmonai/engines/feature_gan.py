"""Feature-level GAN: generate a CNN's feature vectors of rare classes instead of images.

Instead of synthesising images, a small class-conditional GAN learns the distribution of the (frozen, e.g. ImageNet)
backbone's pooled feature vectors of each class, and the classifier head is trained on real + synthetic *features*
(the idea of feature-generating networks, e.g. Xian et al., "Feature Generating Networks for Zero-Shot Learning",
CVPR 2018, used for imbalanced medical data as feature-space augmentation). It is cheap on CPU (an MLP on
1280-D vectors) and cannot leak a patient's image, but it is only as good as the features.

* :class:`FeatureGAN`: standardises the training features, trains :class:`medmonai.networks.gan.FeatureGenerator`
  against :class:`medmonai.networks.gan.FeatureDiscriminator` (hinge loss, spectral norm, class-balanced batches so the
  minority class is learned as well as the majority), and samples features per class in the original scale.
* :func:`fit_classical_with_feature_gan`: the deep-features classifier (:class:`medmonai.engines.classical.
  ClassicalClassifier`) with synthetic features: ``C`` is tuned by inner CV on the **real** training features only,
  then the classifier is refitted with that ``C`` on real + synthetic training features. Validation and test
  features are never synthetic, and the GAN sees only the training features it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medmonai.data.synthetic import synthetic_counts
from medmonai.engines.classical import ClassicalClassifier, fit_classical
from medmonai.networks.gan import FeatureDiscriminator, FeatureGenerator
from medmonai.utils import PathLike, atomic_torch_save

__all__ = ["FeatureGAN", "fit_classical_with_feature_gan"]

logger = logging.getLogger(__name__)


class FeatureGAN:
    """A class-conditional GAN over feature vectors (see the module docstring).

    Args:
        latent_dim: length of the latent vector.
        hidden: hidden width of the generator and discriminator MLPs.
        n_layers: hidden layers of each MLP.
        steps: discriminator/generator update pairs.
        batch_size: samples per step (drawn class-balanced, with replacement).
        lr: Adam learning rate of both networks.
        seed: seed of the initialisation and the batches.
        device: torch device.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        hidden: int = 256,
        n_layers: int = 2,
        steps: int = 2000,
        batch_size: int = 64,
        lr: float = 2e-4,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.latent_dim = int(latent_dim)
        self.hidden = int(hidden)
        self.n_layers = int(n_layers)
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.generator: torch.nn.Module | None = None
        self.losses_: dict[str, list[float]] = {"d": [], "g": []}

    def fit(self, features: Any, labels: Sequence[int]) -> FeatureGAN:
        """Train on ``(N, D)`` real training features with class indices ``0..C-1``.

        Raises:
            ValueError: mismatched lengths, non-finite features, or a class with no sample.
        """
        x = np.asarray(features, dtype=np.float32)
        y = np.asarray(labels).astype(int)
        if x.ndim != 2 or len(x) != len(y):
            raise ValueError(f"features must be (N, D) with one label each; got {x.shape} and {len(y)} labels")
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or Inf")
        n_classes = int(y.max()) + 1
        counts = np.bincount(y, minlength=n_classes)
        if (counts == 0).any():
            raise ValueError(f"every class needs real samples to learn from; samples per class: {counts.tolist()}")
        self.mean_ = x.mean(0)
        self.std_ = x.std(0) + 1e-6
        self.num_classes_ = n_classes
        self.feature_dim_ = int(x.shape[1])
        xs = torch.as_tensor((x - self.mean_) / self.std_, device=self.device)
        by_class = [torch.as_tensor(np.flatnonzero(y == c)) for c in range(n_classes)]
        torch.manual_seed(self.seed)
        g = FeatureGenerator(self.feature_dim_, n_classes, self.latent_dim, self.hidden, self.n_layers).to(self.device)
        d = FeatureDiscriminator(self.feature_dim_, n_classes, self.hidden, self.n_layers).to(self.device)
        opt_g = torch.optim.Adam(g.parameters(), lr=self.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(d.parameters(), lr=self.lr, betas=(0.5, 0.999))
        rng = torch.Generator(device="cpu").manual_seed(self.seed)
        g.train()
        d.train()
        for _ in range(self.steps):
            yb = torch.randint(0, n_classes, (self.batch_size,), generator=rng)
            idx = torch.empty(self.batch_size, dtype=torch.long)
            for c in range(n_classes):
                mask = yb == c
                idx[mask] = by_class[c][torch.randint(0, len(by_class[c]), (int(mask.sum()),), generator=rng)]
            real, yb = xs[idx.to(self.device)], yb.to(self.device)
            z = torch.randn(self.batch_size, self.latent_dim, generator=rng).to(self.device)
            fake = g(z, yb)
            loss_d = F.relu(1 - d(real, yb)).mean() + F.relu(1 + d(fake.detach(), yb)).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = -d(fake, yb).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            self.losses_["d"].append(loss_d.item())
            self.losses_["g"].append(loss_g.item())
        self.generator = g.eval()
        return self

    @torch.no_grad()
    def sample(self, counts: Sequence[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``counts[c]`` synthetic feature vectors of each class ``c``, in the original feature scale.

        Returns:
            ``(features (sum(counts), D), labels)``.
        """
        if self.generator is None:
            raise RuntimeError("FeatureGAN.sample() before fit()")
        if len(counts) != self.num_classes_:
            raise ValueError(f"counts has {len(counts)} values for {self.num_classes_} classes")
        rng = torch.Generator(device="cpu").manual_seed(int(seed))
        xs, ys = [], []
        for c, n in enumerate(counts):
            if int(n) <= 0:
                continue
            z = torch.randn(int(n), self.latent_dim, generator=rng).to(self.device)
            y = torch.full((int(n),), c, dtype=torch.long, device=self.device)
            xs.append(self.generator(z, y).cpu().numpy() * self.std_ + self.mean_)
            ys.append(np.full(int(n), c))
        if not xs:
            return np.zeros((0, self.feature_dim_), np.float32), np.zeros(0, int)
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys)

    def save(self, path: PathLike) -> None:
        """Save the generator weights and the standardisation (atomically; load with :meth:`load`)."""
        if self.generator is None:
            raise RuntimeError("FeatureGAN.save() before fit()")
        state = {
            "generator": self.generator.state_dict(),
            "mean": torch.as_tensor(self.mean_),
            "std": torch.as_tensor(self.std_),
            "config": torch.as_tensor(
                [self.feature_dim_, self.num_classes_, self.latent_dim, self.hidden, self.n_layers]
            ),
        }
        atomic_torch_save(state, path)

    @classmethod
    def load(cls, path: PathLike, device: str | torch.device = "cpu") -> FeatureGAN:
        """Load a generator saved by :meth:`save` (``torch.load(weights_only=True)``)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        feature_dim, num_classes, latent_dim, hidden, n_layers = (int(v) for v in state["config"])
        gan = cls(latent_dim=latent_dim, hidden=hidden, n_layers=n_layers, device=device)
        gen = FeatureGenerator(feature_dim, num_classes, latent_dim, hidden, n_layers)
        gen.load_state_dict(state["generator"])
        gan.generator = gen.to(gan.device).eval()
        gan.mean_, gan.std_ = state["mean"].numpy(), state["std"].numpy()
        gan.num_classes_, gan.feature_dim_ = num_classes, feature_dim
        return gan


class _WithSynthetic:
    """Inner-CV splitter: the real folds, with every synthetic sample added to each training side only."""

    def __init__(self, splits: Sequence[tuple[np.ndarray, np.ndarray]], n_real: int, n_synthetic: int) -> None:
        self.splits = list(splits)
        self.synthetic = np.arange(n_real, n_real + n_synthetic)

    def split(self, X: Any = None, y: Any = None, groups: Any = None) -> Any:
        for tr, te in self.splits:
            yield np.concatenate([tr, self.synthetic]), te

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return len(self.splits)


def fit_classical_with_feature_gan(
    features: Any,
    labels: Sequence[int],
    groups: Sequence[Any] | None = None,
    model: str = "logreg_l2",
    mode: str = "balance",
    ratio: float = 1.0,
    cv: int = 5,
    seed: int = 0,
    gan: FeatureGAN | None = None,
    **kwargs: Any,
) -> Any:
    """A deep-features classifier trained on real + GAN-generated training features (see the module docstring).

    Args:
        features: ``(N, D)`` real training features.
        labels: class indices ``0..C-1``.
        groups: subject per sample (inner CV keeps subjects together).
        model: ``logreg_l2`` or ``logreg_l1`` (``linear_svm`` needs out-of-fold decisions for every sample for its
            calibration, which synthetic samples do not have).
        mode: ``balance`` or ``fraction`` (:func:`medmonai.data.synthetic.synthetic_counts`); ``none`` gives the
            real-only classifier.
        ratio: the ratio of ``mode``.
        cv: inner folds of the ``C`` tuning (on real features).
        seed: seed of the GAN, the sampling and the inner folds.
        gan: an unfitted :class:`FeatureGAN` with other settings (default ``FeatureGAN(seed=seed)``).
        **kwargs: other :class:`medmonai.engines.classical.ClassicalClassifier` arguments.

    Returns:
        The fitted classifier, with ``feature_gan_`` = ``{"mode", "ratio", "synthetic_per_class", "C_real"}``.
    """
    if model == "linear_svm":
        raise ValueError("feature GAN: use logreg_l2 or logreg_l1 (linear_svm calibration needs real OOF decisions)")
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels).astype(int)
    real = fit_classical(x, y, groups=groups, model=model, cv=cv, seed=seed, **kwargs)
    counts = synthetic_counts(np.bincount(y).tolist(), mode, ratio)
    info = {"mode": mode, "ratio": float(ratio), "synthetic_per_class": counts, "C_real": real.best_params_["C"]}
    if sum(counts) == 0:
        real.feature_gan_ = info
        return real
    gan = gan if gan is not None else FeatureGAN(seed=seed)
    gan.fit(x, y)
    xs, ys = gan.sample(counts, seed=seed)
    splitter = _WithSynthetic(real.cv_splits_, len(x), len(xs))
    g = None
    if groups is not None:
        g = np.concatenate([np.asarray(groups, dtype=object), np.asarray([f"synthetic-{i}" for i in range(len(xs))])])
    clf = ClassicalClassifier(model=model, Cs=[real.best_params_["C"]], cv=splitter, seed=seed, **kwargs)
    clf.fit(np.concatenate([x, xs]), np.concatenate([y, ys]), groups=g)
    clf.feature_gan_ = info
    logger.info("feature GAN (%s, ratio %s): %s synthetic feature vectors per class added", mode, ratio, counts)
    return clf
