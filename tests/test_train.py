"""The trainer and the ``dagstudy train`` command on real data (digits, CPU)."""

import json
import math
import subprocess
import sys

import pytest
import torch

from dagstudy.cli import main
from dagstudy.config import TrainConfig
from dagstudy.trainer import load_data, train

CPU = torch.device("cpu")


def run(config: TrainConfig, seeds: list[int]):
    return train(config, seeds, load_data(config, seeds, CPU), CPU)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_seed_in_population_equals_seed_alone(optimizer):
    config = TrainConfig(topology="dag", depth=3, width=16, epochs=5, optimizer=optimizer,
                         lr=0.05 if optimizer == "sgd" else 1e-3)
    pop = run(config, [0, 1, 2, 3])
    alone = run(config, [2])
    for name in ("train_loss", "val_loss", "val_accuracy", "grad_reach"):
        got = [epoch[2] for epoch in pop.curves[name]]
        want = [epoch[0] for epoch in alone.curves[name]]
        assert got == pytest.approx(want, abs=1e-4), name


def test_training_is_deterministic_on_cpu():
    config = TrainConfig(topology="fanin", fanin=8, depth=3, width=8, epochs=3)
    a, b = run(config, [0, 1]), run(config, [0, 1])
    assert a.curves["train_loss"] == b.curves["train_loss"]


def test_diverging_seed_is_recorded_and_others_continue():
    """Seed 0 blows up at epoch 3 under this planted config; seed 1 trains on, unaffected."""
    config = TrainConfig(topology="dag", depth=3, width=16, epochs=4, optimizer="sgd", lr=0.5,
                         optimizer_params={"momentum": 0.9})
    result = run(config, [0, 1])
    assert result.status == ["diverged", "ok"] and result.reasons[1] is None
    assert "non-finite training loss" in result.reasons[0] and "epoch 3" in result.reasons[0]
    assert result.epochs == 4
    assert result.curves["train_loss"][-1][0] == pytest.approx(math.log(10), abs=0.05)
    dead_acc = result.final["test_accuracy"][0]
    assert math.isfinite(dead_acc) and dead_acc < 0.2  # zeroed weights: one constant class
    alone = run(config, [1])
    assert [e[0] for e in alone.curves["train_loss"]] == pytest.approx(
        [e[1] for e in result.curves["train_loss"]], rel=1e-4)


def test_digits_dag_reaches_95_percent_via_cli(capsys):
    code = main(["train", "--dataset", "digits", "--topology", "dag", "--depth", "4",
                 "--width", "32", "--seeds", "3", "--epochs", "30", "--json", "--quiet"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("test_accuracy", "val_accuracy", "train_loss"):
        assert set(out[key]) >= {"mean", "std", "per_seed"} and len(out[key]["per_seed"]) == 3
    for key in ("epochs", "wall_seconds", "params", "flops_per_example", "config"):
        assert key in out
    assert out["config"]["topology"] == "dag" and out["epochs"] == 30
    assert out["test_accuracy"]["mean"] >= 0.95


def test_curves_hold_diagnostics_per_epoch_and_seed():
    config = TrainConfig(topology="dag", depth=3, width=8, epochs=2)
    result = run(config, [0, 1])
    assert len(result.curves["grad_reach"]) == 2 and len(result.curves["grad_reach"][0]) == 2
    assert len(result.curves["dead_by_block"][0][0]) == 3
    assert all(v >= 0 for v in result.curves["duplicate_pairs"][-1])


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--topology", "ring"], "--topology"),
        (["--depth", "0"], "--depth"),
        (["--topology", "fanin", "--fanin", "0"], "--fanin"),
        (["--dataset", "cifar"], "--dataset"),
        (["--dataset", "mnist", "--data-dir", "/no/such/dir"], "--data-dir"),
        (["--optimizer", "lbfgs"], "--optimizer"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(argv, names, capsys):
    assert main(["train", "--epochs", "1", "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and names in err
    if "--topology" in argv and "ring" in argv:
        assert "allowed: layered, residual, residual-norm, dag, fanin" in err


def test_console_script_runs_as_a_process():
    proc = subprocess.run(
        [sys.executable, "-m", "dagstudy.cli", "train", "--depth", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "--depth" in proc.stderr


def test_train_help_lists_every_config_field_with_its_description(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name, field in TrainConfig.model_fields.items():
        assert "--" + name.replace("_", "-") in text, name
        assert field.description and " ".join(field.description.split()[:4]) in text, name


def test_every_config_field_is_settable_from_the_command_line(monkeypatch):
    from dagstudy.cli.main import build_parser
    from dagstudy.cli.train import train_config

    args = build_parser().parse_args([
        "train", "--split", "fixed", "--val-fraction", "0.15", "--divergence-loss", "50",
        "--probe-size", "64", "--chunk-size", "128", "--synthetic", '{"n_samples": 300}',
        "--stop-on-ratio", "--topology", "fanin", "--fanin", "2"])
    config = train_config(args)
    assert (config.split, config.val_fraction, config.divergence_loss, config.probe_size,
            config.chunk_size, config.synthetic.n_samples, config.stop_on_ratio) == (
        "fixed", 0.15, 50.0, 64, 128, 300, True)
    assert train_config(build_parser().parse_args(["train"])) == TrainConfig()


def test_version_flag(capsys):
    import dagstudy

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dagstudy {dagstudy.__version__}"
