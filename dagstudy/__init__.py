"""dagstudy: distributed hyperparameter studies that confirm or rule out DAG-network, optimizer
and dead-neuron-revival ideas with statistics.

The public API, imported on first use so that ``import dagstudy.trainer`` in a Ray worker stays
light (no Ray, Optuna, MLflow or matplotlib):

- ``train(config, seeds, data, device)`` and ``TrainConfig``: the trainer (``dagstudy.trainer``,
  ``dagstudy.config``);
- ``run_study(spec, ...)``: an Optuna study on Ray, recorded in MLflow (``dagstudy.study``);
- ``confirm(spec, runner, ...)``: paired experiments to verdicts (``dagstudy.confirmation``);
- ``best_configs(study, k)`` and ``trials(study)``: read a study back (``dagstudy.study.query``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dagstudy")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "train", "TrainConfig", "run_study", "confirm", "best_configs",
           "trials"]


def __getattr__(name: str):
    if name == "train":
        from dagstudy.trainer import train

        return train
    if name == "TrainConfig":
        from dagstudy.config import TrainConfig

        return TrainConfig
    if name == "run_study":
        from dagstudy.study.driver import run_study

        return run_study
    if name == "confirm":
        from dagstudy.confirmation.run import confirm

        return confirm
    if name in ("best_configs", "trials"):
        from dagstudy.study import query

        return getattr(query, name)
    raise AttributeError(f"module 'dagstudy' has no attribute {name!r}")
