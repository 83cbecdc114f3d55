"""Statistics of the synthetic-image audit: fidelity, diversity and memorisation, on given feature vectors.

The audit itself (loading the images, EfficientNet-Lite0 features, ``audit.json``) is
:func:`medmonai.engines.synthetic_audit.audit_synthetic`; this module holds what it computes and draws:

- **FID** (Heusel et al. 2017) between two feature sets with MONAI's :class:`~monai.metrics.FIDMetric`
  (:func:`fid`). FID is biased upwards for small sets: compare values only at equal numbers of images.
- **Precision / recall** (Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative
  Models", NeurIPS 2019, :func:`precision_recall`): each set's manifold is the union of balls around its feature
  vectors with the distance to the ``k``-th nearest neighbour in the same set as radius; precision = the fraction of
  synthetic images inside the real manifold (fidelity), recall = the fraction of real images inside the synthetic
  manifold (diversity).
- **Memorisation** (:func:`memorization`): for every synthetic image, its nearest real training image in each space
  (e.g. feature space and pixel space). The reference is the real-to-real nearest-neighbour distance of every real
  training image to the closest *other* real training image, in the same space (exact duplicates inside the real
  set, distance 0, are left out of the reference and counted). A synthetic image is flagged as a **near-copy**
  when, in any space, its distance to the nearest training image is below ``copy_ratio`` (default 0.5) times the
  ``reference_percentile``-th percentile (default 1 %) of these real-to-real distances: less than half the distance
  of the closest 1 % of pairs of distinct training images. A generator that samples new images of the training
  distribution has at most ``reference_percentile`` % of its images flagged per space by chance (fewer, because of
  the factor); exact and lightly noised copies are far below the threshold.
- :func:`save_closest_pairs_png`: the closest synthetic/real pairs as a PNG.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from matplotlib.figure import Figure
from monai.metrics import FIDMetric
from monai.metrics.fid import _cov, compute_frechet_distance

from medmonai.utils import PathLike, atomic_write

__all__ = [
    "knn_radii",
    "precision_recall",
    "fid",
    "nearest_neighbours",
    "memorization",
    "save_closest_pairs_png",
]


# -------------------------------------------------------------------------------------------------- pure statistics
def _as_tensor(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def knn_radii(features: Any, k: int = 3) -> np.ndarray:
    """Distance of every vector to its ``k``-th nearest neighbour in the same set (itself excluded)."""
    x = _as_tensor(features)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 vectors for k-NN radii, got {n}")
    k = min(int(k), n - 1)
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return torch.kthvalue(d, k, dim=1).values.numpy()


def precision_recall(real: Any, synthetic: Any, k: int = 3) -> dict[str, float]:
    """k-NN manifold precision and recall (Kynkäänniemi et al. 2019).

    Args:
        real: real feature vectors ``(N, D)``.
        synthetic: synthetic feature vectors ``(M, D)``.
        k: neighbourhood size of the manifold estimates (3 in the paper).

    Returns:
        ``{"precision": ..., "recall": ..., "k": k}``.
    """
    r, s = _as_tensor(real), _as_tensor(synthetic)
    r_rad, s_rad = torch.as_tensor(knn_radii(r, k)), torch.as_tensor(knn_radii(s, k))
    d = torch.cdist(s, r)  # (M, N)
    precision = (d <= r_rad[None, :]).any(dim=1).double().mean().item()
    recall = (d.t() <= s_rad[None, :]).any(dim=1).double().mean().item()
    return {"precision": precision, "recall": recall, "k": int(k)}


def fid(real: Any, synthetic: Any) -> float:
    """Fréchet distance between two feature sets with MONAI's ``FIDMetric`` (float64).

    With fewer images than feature dimensions, the vectors are first expressed in an orthonormal basis of their span
    (the distance is unchanged, the computation much faster). The covariances are then singular; when the matrix
    square root has a large imaginary part, both covariances get ``1e-6 * I`` added (as MONAI does for non-finite
    results).
    """
    r, s = _as_tensor(real), _as_tensor(synthetic)
    if r.shape[0] < 2 or s.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {r.shape[0]} real and {s.shape[0]} synthetic")
    both = torch.cat([r, s])
    if both.shape[1] > both.shape[0]:
        # fewer vectors than dimensions: express them in an orthonormal basis of their span. Means, covariances and
        # traces restricted to that span are unchanged and both sets are zero outside it, so the distance is exactly
        # the same, but the matrix square root is of size <= N instead of D (seconds instead of minutes for 1280-d).
        _, sv, vh = torch.linalg.svd(both, full_matrices=False)
        basis = vh[: int((sv > sv.max() * 1e-12).sum())]
        r, s = r @ basis.T, s @ basis.T
    try:
        with warnings.catch_warnings():  # singular covariances (fewer images than dimensions) are expected here
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            return float(FIDMetric()(s, r))
    except ValueError:
        eye = torch.eye(r.shape[1], dtype=torch.float64) * 1e-6
        value = compute_frechet_distance(s.mean(0), _cov(s, rowvar=False) + eye, r.mean(0), _cov(r, rowvar=False) + eye)
        return float(value.real if torch.is_complex(value) else value)


def nearest_neighbours(query: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """Index and Euclidean distance of the nearest ``reference`` vector for every ``query`` vector."""
    d = torch.cdist(_as_tensor(query), _as_tensor(reference))
    dist, idx = d.min(dim=1)
    return idx.numpy(), dist.numpy()


def _real_nn_reference(real: torch.Tensor, duplicate_tol: float) -> tuple[np.ndarray, int]:
    """Distance of every real vector to its nearest *other*, non-identical real vector; number of duplicate pairs."""
    d = torch.cdist(real, real)
    n = d.shape[0]
    d.fill_diagonal_(float("inf"))
    dup = d <= duplicate_tol
    n_dup = int(torch.triu(dup, diagonal=1).sum())
    d = d.masked_fill(dup, float("inf"))
    nn = d.min(dim=1).values.numpy()
    return nn[np.isfinite(nn)] if n > 1 else nn, n_dup


def memorization(
    real: Mapping[str, Any],
    synthetic: Mapping[str, Any],
    reference_percentile: float = 1.0,
    copy_ratio: float = 0.5,
    duplicate_tol: float = 1e-6,
) -> dict[str, Any]:
    """Nearest real training image of every synthetic image per space, and near-copy flags (see the module docstring).

    Args:
        real: ``{space name: (N, D) vectors}`` of the real training images (e.g. ``feature``, ``pixel``).
        synthetic: ``{space name: (M, D) vectors}`` of the synthetic images, same spaces.
        reference_percentile: percentile (0-100) of the real-to-real nearest-neighbour distances that, times
            ``copy_ratio``, is the near-copy threshold.
        copy_ratio: factor on that percentile (``1``: as close as the closest ``reference_percentile`` % of real
            pairs; smaller: stricter).
        duplicate_tol: real-to-real distances at or below this are duplicates (left out of the reference).

    Returns:
        ``{"spaces": {space: {"threshold", "reference": {...}}}, "nearest": {space: indices}, "distance": {space:
        distances}, "ratio": {space: distance / threshold}, "flagged": bool array, "flagged_in": {space: bool array}}``.
    """
    if not 0 < float(reference_percentile) < 100:
        raise ValueError(f"reference_percentile must be in (0, 100), got {reference_percentile}")
    if not float(copy_ratio) > 0:
        raise ValueError(f"copy_ratio must be > 0, got {copy_ratio}")
    out: dict[str, Any] = {"spaces": {}, "nearest": {}, "distance": {}, "ratio": {}, "flagged_in": {}}
    flagged = None
    for space in real:
        r, s = _as_tensor(real[space]), _as_tensor(synthetic[space])
        if r.shape[0] < 2:
            raise ValueError("the memorisation check needs at least 2 real training images")
        ref, n_dup = _real_nn_reference(r, duplicate_tol)
        if ref.size == 0:
            raise ValueError("every real training image is identical to another one: no reference distance")
        tau = float(copy_ratio) * float(np.percentile(ref, reference_percentile))
        idx, dist = nearest_neighbours(s, r)
        is_copy = dist < tau
        out["spaces"][space] = {
            "threshold": tau,
            "reference": {
                "percentile": float(reference_percentile),
                "percentile_value": float(np.percentile(ref, reference_percentile)),
                "n": int(ref.size),
                "min": float(ref.min()),
                "median": float(np.median(ref)),
                "max": float(ref.max()),
                "duplicate_pairs_in_real": n_dup,
            },
            "n_flagged": int(is_copy.sum()),
        }
        out["nearest"][space] = idx
        out["distance"][space] = dist
        out["ratio"][space] = dist / tau if tau > 0 else np.where(dist > 0, np.inf, 0.0)
        out["flagged_in"][space] = is_copy
        flagged = is_copy if flagged is None else (flagged | is_copy)
    out["flagged"] = flagged if flagged is not None else np.zeros(0, dtype=bool)
    return out


# ------------------------------------------------------------------------------------------------------------ report
def _display(x: torch.Tensor) -> np.ndarray:
    a = x[0].numpy()
    if a.ndim == 3:
        a = a[..., a.shape[-1] // 2]
    return a.T  # arrays are [i, j]: rows = j


def save_closest_pairs_png(
    path: PathLike,
    synthetic: torch.Tensor,
    real: torch.Tensor,
    pairs: Sequence[Mapping[str, Any]],
    title: str = "",
) -> Path:
    """Write a PNG of synthetic images (top row of each pair) above their nearest real training images.

    Args:
        path: the PNG file (written atomically).
        synthetic: the synthetic images ``(M, 1, *spatial)`` in [0, 1].
        real: the real images ``(N, 1, *spatial)`` in [0, 1].
        pairs: dicts with ``synthetic_index``, ``real_index``, ``score`` and ``flagged``, closest first.
        title: figure title.
    """
    n = max(len(pairs), 1)
    cols = min(n, 8)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(1.5 * cols, 3.2 * rows + 0.5), dpi=100, layout="constrained")
    for i, p in enumerate(pairs):
        r, c = divmod(i, cols)
        for k, img in enumerate((synthetic[p["synthetic_index"]], real[p["real_index"]])):
            ax = fig.add_subplot(2 * rows, cols, (2 * r + k) * cols + c + 1)
            ax.imshow(_display(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                colour = "red" if p["flagged"] else "black"
                mark = " COPY?" if p["flagged"] else ""
                ax.set_title(f"syn {p['synthetic_index']}: {p['score']:.2f}{mark}", fontsize=7, color=colour)
            else:
                ax.set_title(f"real {p['real_index']}", fontsize=7)
    fig.suptitle(title or "closest synthetic (top) / real training (bottom) pairs", fontsize=9)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
