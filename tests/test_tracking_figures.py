"""Per-trial figures are built once per process and layout and refilled for each trial
(``plots._TrialFigure``): a trial's PNG must equal the figure drawn in one pass from its data
(``reference``, the plain matplotlib way), whatever trials were rendered before it."""

import io
import math

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dagstudy.tracking import plots
from dagstudy.tracking.figures import FIGURE_NAMES, trial_figures


def rows(epochs: int, scale: float, blocks: int = 2, nan_seed: bool = False) -> list[dict]:
    """Per-epoch rows of a 2-seed trial; ``nan_seed``: seed 1's validation loss is missing
    (a diverged seed), and its accuracy is None."""
    out = []
    for e in range(1, epochs + 1):
        out.append({
            "epoch": e,
            "train_loss": [scale / e, 1.5 * scale / e],
            "val_loss": [scale / e + 0.1, math.nan if nan_seed else 1.5 * scale / e + 0.1],
            "val_accuracy": [1 - 0.5 / e, None if nan_seed else 1 - 0.4 / e],
            "dead_fraction": [0.1 * e / epochs, 0.2],
            "dead_by_block": [[0.05 * b * e / epochs for b in range(blocks)]] * 2,
        })
    return out


def reference(trial_rows: list[dict], title: str) -> dict[str, bytes]:
    """The trial's two figures, each a new Figure plotted with its data in one pass."""
    seeds, epochs = [0, 1], [row["epoch"] for row in trial_rows]
    curves = Figure(figsize=(10, 3.5))
    curves.subplots_adjust(**plots._FIXED_MARGINS)
    for ax, name in zip(curves.subplots(1, 3), plots.LABELS):
        series = plots._series(trial_rows, name)
        for seed, values in zip(seeds, series):
            ax.plot(epochs, values, marker=".", lw=0.8, alpha=0.6, label=f"seed {seed}")
        ax.plot(epochs, plots._mean_over_seeds(series), "k-", marker="o", lw=2,
                label="mean over seeds")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=plots.LABELS[name], title=name)
    curves.axes[0].legend(fontsize="small")
    dead = Figure(figsize=(8, 3.5))
    dead.subplots_adjust(**plots._FIXED_MARGINS)
    left, right = dead.subplots(1, 2)
    for seed, values in zip(seeds, plots._series(trial_rows, "dead_fraction")):
        left.plot(epochs, values, marker=".", label=f"seed {seed}")
    left.set(xlabel="epoch", ylabel="dead fraction", title="per seed", ylim=(-0.02, 1.02))
    left.legend(fontsize="small")
    by_block = [row["dead_by_block"] for row in trial_rows]
    for b in range(len(by_block[0][0])):
        right.plot(epochs, [sum(s[b] for s in e) / len(e) for e in by_block], label=f"block {b}")
    right.set(xlabel="epoch", title="mean over seeds, by block", ylim=(-0.02, 1.02))
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.legend(fontsize="small")
    out = {}
    for name, fig in zip(FIGURE_NAMES, (curves, dead)):
        fig.suptitle(title)
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=80)
        out[name] = buffer.getvalue()
    return out


def test_a_trials_figures_equal_a_one_pass_render_whatever_came_before():
    cases = [(rows(12, 100.0), "a"), (rows(3, 0.01, nan_seed=True), "b"),
             (rows(1, 2.0), "c"), (rows(7, 5.0, blocks=3), "d")]
    expected = [reference(r, title) for r, title in cases]
    for (r, title), want in zip(cases, expected):
        blocks = len(r[0]["dead_by_block"][0])
        # a different trial of the same layout in between: its figures are the ones refilled
        trial_figures(rows(20, 1e4, blocks=blocks), [0, 1], "before")
        built = dict(plots._figures)
        got = trial_figures(r, [0, 1], title)
        assert plots._figures == built  # refilled, not built again
        assert set(got) == set(FIGURE_NAMES)
        for name in FIGURE_NAMES:
            assert got[name] == want[name], (title, name)
    # the figures do show the data: different trials give different PNGs
    assert expected[0]["learning_curves.png"] != expected[2]["learning_curves.png"]
    assert expected[0]["dead_fraction.png"] != expected[3]["dead_fraction.png"]
