"""Shape-tolerant loading of any local MONAI / PyTorch checkpoint into a network, with a report.

:func:`load_pretrained` reads a weights file with ``torch.load(..., weights_only=True)`` (pickled objects and
TorchScript archives are refused with an explanation), finds the state dict inside common checkpoint layouts
(raw state dict; nested under ``state_dict`` / ``model`` / ``network`` / ``net`` ..., as written by MONAI's
``CheckpointSaver``, Lightning or hand-written training loops), strips DDP ``module.`` prefixes and aligns key
prefixes between the checkpoint and the model — so a checkpoint of a bare MONAI ``ResNet`` loads into a
:class:`~medmonai.networks.classifier.Classifier` (keys ``backbone.*``) and vice versa, and the final linear layer of
a bare network (``fc``, ``_fc``, ``class_layers.out``) is matched with the classifier's ``head.fc`` (and back).
Only tensors whose names and shapes match are loaded; everything else is listed in the returned :class:`LoadReport`.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "NESTED_KEYS",
    "HEAD_ALIASES",
    "LoadReport",
    "CheckpointError",
    "read_checkpoint",
    "extract_state_dict",
    "load_pretrained",
    "adapt_input_conv",
]

logger = logging.getLogger(__name__)

#: Keys under which checkpoints commonly nest the weights, tried in this order.
NESTED_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "network", "net", "module", "weights")
#: Names of the final linear layer in bare networks and in a Classifier (``head.fc``), matched with one another.
HEAD_ALIASES: tuple[str, ...] = ("head.fc", "fc", "_fc", "class_layers.out", "classifier", "head", "linear", "out")

Shape = tuple[int, ...]
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A file that is not a usable weights checkpoint (the message names the file and the problem)."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        source: checkpoint path (or ``"<state dict>"``).
        loaded: model keys that received checkpoint tensors.
        adapted: ``(model key, checkpoint shape, model shape)`` of first-convolution weights adapted to another
            number of input channels (:func:`adapt_input_conv` rule).
        shape_mismatched: ``(model key, checkpoint shape, model shape)`` of name-matched tensors not loaded.
        missing: model keys absent from the checkpoint (left as initialised).
        unexpected: checkpoint keys (as stored, after ``module.`` stripping) that match no model key.
        key_transform: how checkpoint keys were renamed (e.g. ``"'' -> 'backbone.'"``).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    shape_mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    key_transform: str = ""

    @property
    def ok(self) -> bool:
        """True when every model tensor was loaded and nothing was left over."""
        return not (self.shape_mismatched or self.missing or self.unexpected)

    def summary(self) -> str:
        """One human-readable paragraph."""
        n_total = len(self.loaded) + len(self.missing) + len(self.shape_mismatched)
        lines = [
            f"{self.source}: loaded {len(self.loaded)}/{n_total} model tensors"
            + (f" (keys renamed {self.key_transform})" if self.key_transform else "")
        ]
        if self.adapted:
            lines.append("adapted to the input channels: " + ", ".join(f"{k} {a}->{b}" for k, a, b in self.adapted))
        if self.shape_mismatched:
            lines.append(
                "shape mismatch (not loaded): "
                + ", ".join(f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.shape_mismatched)
            )
        if self.missing:
            lines.append(f"missing from the checkpoint ({len(self.missing)}): " + _preview(self.missing))
        if self.unexpected:
            lines.append(f"unused checkpoint keys ({len(self.unexpected)}): " + _preview(self.unexpected))
        return "; ".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return asdict(self)


def _preview(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the weights of a local checkpoint file into a flat ``{name: tensor}`` dict (``module.`` stripped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: TorchScript archive, pickled objects other than tensors/containers, unreadable file, or no
            state dict found inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            raise CheckpointError(
                f"{path}: this is a TorchScript archive (torch.jit.save), not a weights file. Export its weights "
                "with `torch.save(torch.jit.load(path).state_dict(), 'weights.pt')` (only for files you trust) "
                "and give that file instead."
            )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported global" not in text:
            raise CheckpointError(f"{path}: not a readable PyTorch weights file (unpickling failed)") from e
        culprit = text[text.index("Unsupported global") :].split(" was not")[0]
        raise CheckpointError(
            f"{path}: refused by torch.load(weights_only=True): the file pickles Python objects (e.g. a whole "
            "model or optimizer object), not only tensors. Re-save it as a state dict "
            f"(`torch.save(model.state_dict(), ...)`) from a trusted environment. ({culprit})"
        ) from e
    except RuntimeError as e:
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({str(e).splitlines()[0]})") from e
    except Exception as e:  # corrupt / non-torch files raise KeyError, EOFError, ...
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from e
    return extract_state_dict(obj, str(path))


def _is_state_dict(obj: Any) -> bool:
    if not isinstance(obj, Mapping) or not obj:
        return False
    n_tensors = sum(isinstance(v, torch.Tensor) for v in obj.values())
    return n_tensors > 0 and n_tensors >= len(obj) / 2


def extract_state_dict(obj: Any, source: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Find the state dict in a loaded checkpoint object; strip DDP ``module.`` prefixes; keep only tensors."""
    for _ in range(4):  # nested at most a few levels deep
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{source}: expected a state dict (a mapping of tensors), got {type(obj).__name__}")
        nested = [k for k in NESTED_KEYS if isinstance(obj.get(k), Mapping) and obj[k]]
        if not nested and _is_state_dict(obj):
            break
        if not nested:
            nested = [k for k, v in obj.items() if isinstance(v, Mapping) and _is_state_dict(v)]
            if len(nested) != 1:
                raise CheckpointError(
                    f"{source}: no state dict found: top-level keys {sorted(map(str, obj))[:20]}; expected tensors "
                    f"or one of {list(NESTED_KEYS)}"
                    + (" (several candidates: pass the one you want with prefix_map or extract it)" if nested else "")
                )
        obj = obj[nested[0]]
    else:
        raise CheckpointError(f"{source}: no state dict found within 4 nesting levels")
    state: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        k = str(k)
        while k.startswith(_WRAPPER_PREFIXES):  # DistributedDataParallel / DataParallel / torch.compile
            k = k.split(".", 1)[1]
        state[k] = v
    return state


def _prefixes(key: str, max_parts: int) -> list[tuple[str, str]]:
    """``(prefix, rest)`` splits of a dotted key with 0..max_parts leading components in the prefix."""
    parts = key.split(".")
    out = []
    for i in range(0, min(max_parts, len(parts) - 1) + 1):
        out.append((".".join(parts[:i]) + "." if i else "", ".".join(parts[i:])))
    return out


def _align_keys(
    src: Mapping[str, torch.Tensor], tgt: Mapping[str, torch.Tensor], head_prefix: str | None
) -> tuple[dict[str, str], str]:
    """Map checkpoint keys to model keys: the best global (strip prefix, add prefix) rule, then head aliases."""
    index: dict[str, list[str]] = {}
    for t in tgt:
        for prefix, rest in _prefixes(t, 2):
            index.setdefault(rest, []).append(prefix)
    votes: Counter[tuple[str, str]] = Counter()
    for s, v in src.items():
        for strip, rest in _prefixes(s, 2):
            for add in index.get(rest, []):
                shape_ok = tuple(tgt[add + rest].shape) == tuple(v.shape)
                votes[(strip, add)] += 2 if shape_ok else 1
    strip, add = ("", "")
    if votes:
        strip, add = max(votes, key=lambda sa: (votes[sa], -len(sa[0]) - len(sa[1])))
    mapping: dict[str, str] = {}
    for s in src:
        if s.startswith(strip) and add + s[len(strip) :] in tgt:
            mapping[s] = add + s[len(strip) :]
    if head_prefix is not None:
        used = set(mapping.values())
        for s in src:
            if s in mapping:
                continue
            rest = s[len(strip) :] if s.startswith(strip) else s
            for alias in HEAD_ALIASES:
                for param in ("weight", "bias"):
                    t = f"{head_prefix}.{param}"
                    if rest == f"{alias}.{param}" and t in tgt and t not in used:
                        mapping[s] = t
                        used.add(t)
    transform = "" if (strip, add) == ("", "") else f"'{strip}' -> '{add}'"
    return mapping, transform


def _apply_prefix_map(state: Mapping[str, torch.Tensor], prefix_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    ordered = sorted(prefix_map.items(), key=lambda kv: -len(kv[0]))
    for k, v in state.items():
        for old, new in ordered:
            if k.startswith(old):
                k = new + k[len(old) :]
                break
        out[k] = v
    return out


def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    strict: bool = False,
    prefix_map: Mapping[str, str] | None = None,
    adapt_input_channels: bool = True,
) -> LoadReport:
    """Load the matching tensors of a local checkpoint into ``model`` and report what was (not) loaded.

    Args:
        model: the network (a :class:`~medmonai.networks.classifier.Classifier` or any ``nn.Module``).
        source: path of a ``torch.save`` file (``.pt``/``.pth``/``.ckpt``), or an in-memory state dict.
        strict: raise ``RuntimeError`` (before changing the model) unless every model tensor is loaded and every
            checkpoint tensor is used (after renaming and input-channel adaptation).
        prefix_map: explicit ``{checkpoint prefix: model prefix}`` renames applied first (longest prefix wins),
            e.g. ``{"encoder.": "backbone."}``; the automatic prefix alignment still runs afterwards.
        adapt_input_channels: when the model's first convolution differs from the checkpoint's only in its number
            of input channels, adapt it (sum of the source filters divided by the new channel count) instead of
            skipping it.

    Returns:
        The :class:`LoadReport` (also logged at INFO level, and stored as ``model.load_report`` on a Classifier).
    """
    if isinstance(source, Mapping):
        name = "<state dict>"
        state = extract_state_dict(source, name)
    else:
        name = str(source)
        state = read_checkpoint(source)
    if prefix_map:
        state = _apply_prefix_map(state, prefix_map)
    target = model.state_dict()
    head_prefix = next((a for a in HEAD_ALIASES if f"{a}.weight" in target), None)
    mapping, transform = _align_keys(state, target, head_prefix)

    first_conv = next((k for k, v in target.items() if k.endswith("weight") and v.ndim >= 3), None)
    report = LoadReport(source=name, key_transform=transform)
    to_load: dict[str, torch.Tensor] = {}
    for s, t in mapping.items():
        v, want = state[s], target[t]
        if tuple(v.shape) == tuple(want.shape):
            to_load[t] = v
            report.loaded.append(t)
        elif (
            adapt_input_channels
            and t == first_conv
            and v.ndim == want.ndim
            and v.shape[0] == want.shape[0]
            and v.shape[2:] == want.shape[2:]
        ):
            to_load[t] = adapt_input_conv(v, want.shape[1])
            report.loaded.append(t)
            report.adapted.append((t, tuple(v.shape), tuple(want.shape)))
        else:
            report.shape_mismatched.append((t, tuple(v.shape), tuple(want.shape)))
    matched = set(mapping.values())
    report.missing = [k for k in target if k not in matched]
    report.unexpected = [k for k in state if k not in mapping]
    if not report.loaded:
        raise CheckpointError(
            f"{name}: no tensor of the checkpoint matches the model (checkpoint keys e.g. {_preview(list(state), 4)}; "
            f"model keys e.g. {_preview(list(target), 4)}); use prefix_map to rename"
        )
    if strict and not report.ok:
        raise RuntimeError(f"strict loading failed: {report.summary()}")
    model.load_state_dict(to_load, strict=False)
    logger.info(report.summary())
    if hasattr(model, "load_report"):
        model.load_report = report
    return report


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a pretrained first-convolution weight ``(out, c_src, *k)`` to ``in_channels`` input channels.

    Rule: every new input channel gets ``sum(weight over the source channels) / in_channels``. For
    ``in_channels=1`` this is the plain sum of the RGB filters, so a gray image gives exactly the response the
    RGB network gives to that image replicated on 3 channels; for any ``in_channels`` the same holds for a gray image
    replicated on all channels (the output scale is preserved). Returns ``weight`` unchanged if the count matches.
    """
    if weight.shape[1] == in_channels:
        return weight
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    summed = weight.sum(dim=1, keepdim=True)
    return (summed / in_channels).repeat(1, in_channels, *([1] * (weight.ndim - 2))).contiguous()
