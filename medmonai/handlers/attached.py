"""Which medmonai handler objects are attached to which engine, without reading ignite's private handler lists.

Ignite offers no public way to list the handlers of an engine, so the handlers whose state has to be found again
(checkpointed, resumed, reported) record themselves here when they attach: :func:`register` keeps a weak reference
to the engine and a plain reference to the object. :class:`~medmonai.handlers.checkpoint.TrainingState` and
:class:`~medmonai.handlers.provenance.ProvenanceHandler` read them back with :func:`attached` and :func:`evaluators`.
"""

from __future__ import annotations

import weakref
from typing import Any

from ignite.engine import Engine

__all__ = ["register", "attached", "evaluators"]

_ATTACHED: weakref.WeakKeyDictionary[Engine, list[Any]] = weakref.WeakKeyDictionary()


def register(engine: Engine, obj: Any) -> None:
    """Record that ``obj`` is attached to ``engine`` (once; in attachment order)."""
    objs = _ATTACHED.setdefault(engine, [])
    if not any(o is obj for o in objs):
        objs.append(obj)


def attached(engine: Engine, kind: type | tuple[type, ...] | None = None) -> list[Any]:
    """The objects registered on ``engine`` (those that are instances of ``kind`` when given), in attachment order."""
    objs = list(_ATTACHED.get(engine, ()))
    return objs if kind is None else [o for o in objs if isinstance(o, kind)]


def evaluators(engine: Engine) -> list[Engine]:
    """The evaluators named (``evaluator`` attribute) by the handlers registered on ``engine`` (the trainer), each once.

    These are the validation evaluators of :class:`~medmonai.handlers.checkpoint.EarlyStopOnValidation` and
    :class:`~medmonai.handlers.checkpoint.RestoreBestWeights`, in the order those handlers were attached.
    """
    out: list[Engine] = []
    for obj in attached(engine):
        ev = getattr(obj, "evaluator", None)
        if isinstance(ev, Engine) and not any(e is ev for e in out):
            out.append(ev)
    return out
