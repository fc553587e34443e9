"""CLI conventions: --version, ui/dashboard options and their one-line errors, best's table
width, the progress lines, and what tracking logs of a configuration (fast: no training)."""

import json
import sys

import optuna
import pytest

from dagstudy import __version__
from dagstudy.cli import main
from dagstudy.cli.study import BEST_WIDTH, best_table
from dagstudy.study.progress import Status, progress_printer
from dagstudy.study.query import best_configs
from dagstudy.tracking.records import config_hash, config_params, epoch_metrics, epoch_timestamps


def test_version_prints_the_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"dagstudy {__version__}"


@pytest.mark.parametrize("command", [["ui"], ["dashboard", "nostudy"]])
@pytest.mark.parametrize("value", ["0", "65536", "-1"])
def test_port_out_of_range_is_a_one_line_error(command, value, capsys, tmp_path):
    assert main([*command, "--run-dir", str(tmp_path), "--port", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dagstudy {command[0]}: error: --port: {value} is not a port "
                   "(allowed: 1-65535)"]


def test_ui_help_names_host_port_and_default(capsys):
    with pytest.raises(SystemExit):
        main(["ui", "--help"])
    out = capsys.readouterr().out
    assert "--host" in out and "--port" in out and "127.0.0.1" in out and "5000" in out


def test_dashboard_without_optuna_dashboard_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed
    assert main(["dashboard", "smoke", "--run-dir", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "optuna-dashboard is not installed" in line and "dagstudy[dashboard]" in line


def test_dashboard_unknown_study_is_a_one_line_error(capsys, tmp_path):
    pytest.importorskip("optuna_dashboard")
    assert main(["dashboard", "nostudy", "--run-dir", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dagstudy dashboard: error: study: ") and "nostudy" in line


def test_best_table_fits_100_columns_unless_wide(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="wide", storage=url, direction="maximize")
    names = [f"a_rather_long_parameter_name_{i}" for i in range(8)]
    for k in range(4):
        params = {n: 0.001 * (k + 1) * (i + 1) for i, n in enumerate(names)}
        dists = {n: optuna.distributions.FloatDistribution(0.0, 1.0) for n in names}
        study.add_trial(optuna.trial.create_trial(
            value=0.5 + 0.1 * k, params=params, distributions=dists,
            user_attrs={"mean": 0.5, "std": 0.0123456789, "per_seed": [0.5, 0.5],
                        "config": {"lr": 0.1}, "mlflow_run_id": "x" * 32}))
    best = best_configs("wide", k=4, storage=url)
    narrow = best_table(best)
    assert max(map(len, narrow.splitlines())) <= BEST_WIDTH
    assert "not shown" in narrow and "0.01235" in narrow  # numbers at 4 significant digits
    assert "per_seed" not in narrow and "None" not in narrow
    wide = best_table(best, wide=True)
    assert max(map(len, wide.splitlines())) > BEST_WIDTH and "mlflow_run_id" in wide


class _Stream:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return False


def test_progress_announces_the_first_running_trial_once():
    stream = _Stream()
    show = progress_printer(stream)
    show(Status("smoke", 0, 0, 0, 2, 10, None, None, 1.0, None))
    show(Status("smoke", 1, 0, 0, 2, 10, 0.9, 0, 9.0, 80.0))
    lines = stream.text.splitlines()
    assert lines[0] == ("[smoke] first trial running (2 in flight); progress follows as "
                        "trials finish")
    assert sum("first trial running" in line for line in lines) == 1


def test_tracking_logs_only_used_params_and_no_test_metric_per_epoch():
    digits = {"dataset": "digits", "synthetic": {"n_samples": 100, "d": 4}, "topology": "dag",
              "fanin": None, "fanin_wiring": "random", "lr": 0.1, "optimizer_params": {}}
    params = config_params(digits)
    assert params == {"dataset": "digits", "topology": "dag", "lr": "0.1"}
    synthetic = {**digits, "dataset": "synthetic", "topology": "fanin", "fanin": 4}
    assert {"synthetic.n_samples", "fanin", "fanin_wiring"} <= set(config_params(synthetic))
    assert config_hash(digits) == config_hash({**digits, "synthetic": {}})  # unused: same
    assert config_hash(digits) != config_hash({**digits, "lr": 0.2})
    rows = [{"epoch": e, "train_loss": [1.0 / e, 2.0 / e], "test_accuracy": [0.5, 0.6],
             "seconds": [2.0 * e, 2.0 * e]} for e in (1, 2, 3)]
    stamps = epoch_timestamps(rows, 100_000)
    assert stamps == [96_000, 98_000, 100_000]  # the last epoch ended when results came back
    metrics = epoch_metrics(rows, stamps)
    assert {m.key for m in metrics} == {"train_loss", "seconds"}
    assert [m.value for m in epoch_metrics(rows, stamps, seed=1) if m.key == "train_loss"] == [
        2.0, 1.0, 2.0 / 3]
    assert json.dumps(params)  # params are strings, ready for MLflow


def test_optimization_history_shows_pruned_trials(tmp_path):
    from dagstudy.tracking.plots import plot_history

    study = optuna.create_study(direction="maximize", study_name="hist")
    for k in range(4):
        trial = study.ask()
        trial.report(0.1 * k, 1)
        if k % 2:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 0.5 + 0.1 * k)
    fig = plot_history(study, tmp_path / "history.png")
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert "pruned (last reported value)" in labels and "complete" in labels
    pruned = ax.collections[labels.index("pruned (last reported value)")]
    assert pruned.get_offsets().ravel().tolist() == pytest.approx([1.0, 0.1, 3.0, 0.3])
