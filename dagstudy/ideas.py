"""The one registry of the ideas dagstudy tests (``../shared/IDEAS.md``), by stable ID.

Each ``Idea`` holds its ID, its claim in one line, ``home`` (the module, relative to the
``dagstudy`` package, where its mechanism lives), ``touched(config) -> bool``: whether a
training configuration exercises it (``config`` is a ``TrainConfig`` or its ``model_dump()``),
and ``defaults``: the confirmation fields (``confirmation.spec.IdeaSpec``: metric, margin,
diagnostics, ...) a confirmation file gets for this ID unless it states them itself.
Everything that lists ideas derives from ``IDEAS``: the IDs a confirmation file may name, the
MLflow tag ``dagstudy.ideas`` of a trial, and the README's idea table. The optimizer variants'
and revival policies' ``idea`` attributes must name IDs of this table (a test checks it).

Adding an idea: one ``Idea(...)`` line below, and its mechanism in the module ``home`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


def _field(config: Any, name: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(name)
    return getattr(config, name, None)


def _optimizer_param(config: Any, name: str) -> Any:
    return (_field(config, "optimizer_params") or {}).get(name)


def _is(field: str, *values: str) -> Callable[[Any], bool]:
    return lambda config: _field(config, field) in values


def _positive(field: str) -> Callable[[Any], bool]:
    return lambda config: (_field(config, field) or 0) > 0


FACTOR_1_25 = 0.0969  # log10(1.25): loss margins are a factor 1.25, compared on log10 scale
_ACCURACY = {"metric": "test_accuracy", "margin": 0.01}
_LOSS = {"metric": "log10_train_loss", "higher_is_better": False, "margin": FACTOR_1_25}
_PASSES = {"secondary_metrics": ["passes_to:train_loss:0.01"]}  # IDEAS.md: passes to a target
_REVIVAL = {**_ACCURACY, "diagnostics": [
    "dead_fraction", "activation_rank_by_block", "revived", "revived_nodes", "redied_by_pass",
    "resurrection_rate_by_block", "revival_loss_jump"]}


@dataclass(frozen=True)
class Idea:
    """One idea of IDEAS.md: ``id`` (e.g. ``DAG-DENSE``), ``claim`` (one line), ``home`` (module
    path under ``dagstudy/``, e.g. ``model/topology.py``), ``touched`` and ``defaults`` (see the
    module docstring)."""

    id: str
    claim: str
    home: str
    touched: Callable[[Any], bool]
    defaults: Mapping[str, Any]


IDEAS: dict[str, Idea] = {idea.id: idea for idea in (
    Idea("DAG-DENSE", "every hidden node reads every prior node: deeper nets train better than "
         "a layered MLP", "model/topology.py", _is("topology", "dag"),
         {**_ACCURACY, "diagnostics": ["grad_reach", "grad_norm_by_block"]}),
    Idea("DAG-DEPTH", "with the DAG, accuracy keeps improving or stays flat as depth grows "
         "where the layered MLP degrades", "confirmation/analyse.py",
         lambda c: False,  # a claim about a depth sweep (``depths``): no one config tests it
         {**_ACCURACY, "diagnostics": ["grad_reach"]}),
    Idea("DAG-FANIN", "a random N prior connections per node bounds compute and keeps most of "
         "the accuracy", "model/topology.py", _is("topology", "fanin"),
         {**_ACCURACY, "noninferiority": True}),
    Idea("OPT-FULLBATCH", "one ISTA step 1/L per pass on the full-batch gradient converges in "
         "fewer passes than minibatch SGD", "optim/fullbatch_ista.py",
         _is("optimizer", "fullbatch-ista", "fista"),
         {**_LOSS, **_PASSES, "diagnostics": ["lipschitz", "backtracks"]}),
    Idea("OPT-LAYERSCALE", "scaling the Lipschitz step down by the number of layers helps",
         "optim/lipschitz.py",
         lambda c: _field(c, "optimizer") in ("fullbatch-ista", "fista", "lipschitz-minibatch")
         and bool(_optimizer_param(c, "depth_scale")),
         {**_LOSS, "diagnostics": ["lipschitz"]}),
    Idea("OPT-FISTA", "FISTA momentum on the full-batch step accelerates further",
         "optim/fista.py", _is("optimizer", "fista"),
         {**_LOSS, **_PASSES, "diagnostics": ["lipschitz", "momentum"]}),
    Idea("OPT-MINIBATCH-L", "a Lipschitz rate / n_cases works for per-case steps, with momentum "
         "carried between passes", "optim/lipschitz_minibatch.py",
         _is("optimizer", "lipschitz-minibatch"),
         {**_LOSS, "diagnostics": ["lipschitz"]}),
    Idea("OPT-STOP", "the last layer's cumulative pass gradient decides when to stop and, with "
         "the error, flags overfitting", "optim/stopping.py",
         lambda c: bool(_field(c, "stop_on_ratio")),
         {**_ACCURACY, "noninferiority": True, "val_stopping": 5,
          "co_primary": {"metric": "epochs", "higher_is_better": False},
          "diagnostics": ["last_layer_grad_ratio"]}),
    Idea("OPT-JITTER", "a slightly different step rate per neuron pushes duplicate neurons "
         "apart", "model/jitter.py", _positive("jitter_spread"),
         {**_ACCURACY, "margin": 0.005, "diagnostics": ["duplicate_pairs"]}),
    Idea("REV-WAIT", "dead neurons above the first level come back by themselves: wait, with "
         "depth-aware patience", "revival/wait.py", _is("revival", "wait"), _REVIVAL),
    Idea("REV-ADD", "reviving by adding a fixed neighbour's incoming weights is as good as "
         "fresh random weights", "revival/add_neighbor.py", _is("revival", "add-neighbor"),
         _REVIVAL),
    Idea("REV-SPLIT", "copy a neighbour and split its outgoing weights: revival without a loss "
         "jump", "revival/split.py", _is("revival", "split"),
         {**_REVIVAL, "diagnostics": [*_REVIVAL["diagnostics"], "pair_similarity"]}),
    Idea("REV-FLIP", "flip the dead neuron's incoming signs and zero its outgoing weights: "
         "revival that disrupts nothing", "revival/flip.py", _is("revival", "flip"),
         {**_REVIVAL, "diagnostics": [*_REVIVAL["diagnostics"], "revived_lifetime"]}),
    Idea("GRAD-FLOOR", "a floor on near-zero weights and inputs in the backward, with "
         "hysteresis, escapes stalls", "model/grad_floor.py", _positive("grad_floor"),
         {**_ACCURACY, "margin": 0.005, "diagnostics": ["stuck_fraction"]}),
)}
"""Every built-in idea, in IDEAS.md's order."""


def ideas_touched(config: Any) -> list[str]:
    """IDs of the ideas ``config`` (a ``TrainConfig`` or its dict) exercises, in registry order."""
    return [idea.id for idea in IDEAS.values() if idea.touched(config)]


def markdown_table() -> str:
    """The README's idea table (ID, claim, home), rendered from ``IDEAS``."""
    rows = [f"| {i.id} | {i.claim} | `dagstudy/{i.home}` |" for i in IDEAS.values()]
    return "\n".join(["| ID | claim | home |", "|---|---|---|", *rows])
