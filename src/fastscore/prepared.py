"""The cache behind the one-call forms: ``fs.sample`` and ``fs.log_prob`` keep the prepared
requests (``fs.Sampler``, ``fs.LogProb``) of each model, keyed by the request's options and
rebuilt when the model's weights change (an optimiser step, ``load_state_dict``, ``.to()``).

Only networks the kernels run (``ScoreMLP``, ``from_torch`` imports) are cached: their
behaviour is their configuration, parameters and buffers, which the key covers. Any other
module (the reference backend runs anything) may depend on state the key cannot see, so its
requests are prepared afresh on every call. Entries live as long as their model: the table is
weakly keyed by the module, and a cached request holds its own snapshot of the network, never
the module itself (requests on the reference backend, which runs the module, are not kept).
"""

from __future__ import annotations

import weakref
from typing import Callable

from .fx_import import ImportedModel
from .nn import ScoreMLP, _weights_key

MAX_PER_MODEL = 16  # distinct requests kept per model (the oldest goes first)

_table: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached(model: nn.Module, request: tuple, build: Callable[[], object]):
    """The prepared request of `model` for `request` (hashable options), built by build() on
    first use and again after the model's weights or configuration change."""
    # typed: steps=10.0 equals and hashes as 10, but only the int is a valid request
    request = tuple((type(v), v) for v in request)
    try:
        hash(request)
    except TypeError:  # an argument of the wrong kind: build() raises the error that names it
        return build()
    if not isinstance(model, (ScoreMLP, ImportedModel)):
        return build()
    weights = _weights_key(model)
    entries = _table.setdefault(model, {})
    hit = entries.get(request)
    if hit is not None and hit[0] == weights:
        return hit[1]
    prepared = build()
    if prepared.backend == "torch":  # it holds the module itself: kept here, it would keep it alive
        return prepared
    entries.pop(request, None)
    if len(entries) >= MAX_PER_MODEL:
        entries.pop(next(iter(entries)))
    entries[request] = (weights, prepared)
    return prepared
