"""Checks a study passes before its first trial: can any of its configurations fit in memory?

``check_memory(spec, budget_bytes, budget_name)`` estimates (``dagstudy.memory``) every corner
of the search space (each combination of choices, ranges at their low and at their high end)
on the study's dataset and seeds. If none fits, the study is refused with the smallest
estimate; otherwise it runs, and a sampled configuration that does not fit fails as a trial
with its estimate as the reason (``worker.train_pack``), never as an out-of-memory kill.
Data that cannot be loaded skips the check: the trials then fail with the data's own error.
"""

from __future__ import annotations

from dagstudy.data import DataError, load_raw
from dagstudy.memory import GIB, MemoryBudgetError, estimate
from dagstudy.study.space import combinations
from dagstudy.study.spec import StudySpec


def check_memory(spec: StudySpec, budget_bytes: int, budget_name: str) -> None:
    """``MemoryBudgetError`` if no corner of ``spec``'s space fits in ``budget_bytes``."""
    configs = [spec.config_for(overrides)
               for overrides in combinations(spec.search, spec.base_config())]
    shapes: dict[str, tuple[int, int, int]] = {}
    smallest = None
    for config in configs:
        key = config.model_dump_json(include={"dataset", "data_dir", "synthetic"})
        if key not in shapes:
            try:
                raw = load_raw(config.dataset, config.data_dir, synthetic=config.synthetic)
            except DataError:  # its trials fail with the data's own error as their reason
                return
            shapes[key] = (raw.x.shape[0], raw.x.shape[1], raw.n_classes)
        n_rows, d_in, n_classes = shapes[key]
        need = estimate(config, spec.seeds, n_rows, d_in, n_classes)
        if need.total <= budget_bytes:
            return
        if smallest is None or need.total < smallest[0].total:
            smallest = (need, config)
    assert smallest is not None
    need, config = smallest
    raise MemoryBudgetError(
        f"memory: no configuration of study {spec.name!r} fits: the smallest ({spec.seeds} "
        f"seeds of depth {config.depth} x width {config.width}, {config.topology}) needs an "
        f"estimated {need.describe()}; {budget_name} allows {budget_bytes / GIB:.2f} GiB")
