"""dagstudy: distributed hyperparameter studies of DAG networks, optimizers and revival.

``best_configs(study, k=5, storage=None)`` and ``trials(study, storage=None)`` (``query``) are
exported here; they are imported on first use, so ``import dagstudy.train`` in a worker stays
light.
"""

__all__ = ["best_configs", "trials"]


def __getattr__(name: str):
    if name in __all__:
        from dagstudy import query

        return getattr(query, name)
    raise AttributeError(f"module 'dagstudy' has no attribute {name!r}")
