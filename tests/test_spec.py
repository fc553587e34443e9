"""Study files: validation before anything runs, env expansion, storage resolution, search."""

import copy
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import ray
import yaml

from dagstudy import cli
from dagstudy.optim import VARIANTS
from dagstudy.revival import POLICIES
from dagstudy.study.loader import load_spec, parse_spec
from dagstudy.study.space import combinations, suggest
from dagstudy.study.spec import Objective, SpecError
from dagstudy.study.storage import storage_for

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())


def smoke(**changes) -> dict:
    data = copy.deepcopy(SMOKE)
    data.update(changes)
    return data


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("DAGSTUDY_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "DAGSTUDY_HOME", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("name", ["smoke", "digits", "mnist"])
def test_shipped_studies_are_valid(name):
    spec = load_spec(ROOT / "studies" / f"{name}.yaml")
    assert spec.name == name and spec.budget.trials


def test_smoke_is_small():
    spec = load_spec(ROOT / "studies" / "smoke.yaml")
    assert spec.dataset == "digits" and spec.budget.trials >= 8 and spec.epochs <= 5


def test_mnist_data_dir_from_env_or_default(monkeypatch):
    assert load_spec(ROOT / "studies" / "mnist.yaml").base["data_dir"] is None
    monkeypatch.setenv("DAGSTUDY_MNIST_DIR", "/data/mnist")
    assert load_spec(ROOT / "studies" / "mnist.yaml").base["data_dir"] == "/data/mnist"


BAD = {
    "unknown key": (smoke(colour="blue"), "colour: Extra inputs are not permitted"),
    "wrong type": (smoke(epochs="many"), "epochs: Input should be a valid integer"),
    "empty search": (smoke(search={}), "search: empty"),
    "unknown variant": (
        smoke(search={"optimizer": {"no-such-variant": {}}}),
        f"search.optimizer: unknown variant ['no-such-variant'] "
        f"(registered: {', '.join(VARIANTS)})",
    ),
    "negative budget": (smoke(budget={"trials": -3}),
                        "budget.trials: Input should be greater than or equal to 1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_study_exits_before_ray(case, tmp_path, monkeypatch, capsys):
    data, message = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start for an invalid study")

    monkeypatch.setattr(ray, "init", no_ray)
    start = time.perf_counter()
    assert cli.main(["run", str(path), "--run-dir", str(tmp_path)]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "optuna.db").exists()


def test_malformed_study_cli_subprocess(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(smoke(budget={"trials": 0})))
    proc = subprocess.run([sys.executable, "-m", "dagstudy.cli", "run", str(path),
                           "--run-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "budget.trials: Input should be greater than or equal to 1" in proc.stderr
    assert "Ray" not in proc.stderr and not list(tmp_path.glob("*.db"))


@pytest.mark.parametrize("change, message", [
    ({"search": {"optimizer": {"adam": {"no_such_param": [1]}}}},
     "search.optimizer: adam: unknown parameter ['no_such_param']"),
    ({"search": {"revival": {"no-such-policy": {}}}},
     f"(registered: {', '.join(POLICIES)})"),
    ({"search": {"depth": {"low": 0, "high": 3}}},
     "search.depth: Input should be greater than or equal to 1 (when "),
    ({"search": {"depth": {"low": 1.5, "high": 3}}}, "search.depth: an integer field needs"),
    ({"search": {"lr": {"low": 0.0, "high": 1.0, "log": True}}}, "log: needs low > 0"),
    ({"search": {"lr": {"low": 0.1, "high": 0.01}}}, "low (0.1) must be < high (0.01)"),
    ({"search": {"topology": ["fanin"]}}, "search.fanin: required"),
    ({"search": {"topology": ["ring"]}}, "search.topology: unknown 'ring'"),
    ({"search": {"width": 5}}, "search.width"),
    ({"base": {"lr": -1}}, "base.lr: Input should be greater than 0"),
    ({"budget": {}}, "budget: set trials and/or wall_minutes"),
    ({"base": {"epochs": 3}}, "base.epochs: set it at the top level"),
    ({"pruner": {"name": "asha"}}, "pruner: Input tag 'asha'"),
    ({"pruner": {"name": "median", "n_warmup": 1}}, "pruner.median.n_warmup: Extra inputs"),
    ({"objective": {"metric": "accuracy"}}, "objective.metric: unknown 'accuracy'"),
    ({"name": "has space"}, "name: allowed characters: letters, digits"),
])
def test_errors_name_the_field(change, message):
    with pytest.raises(SpecError) as err:
        parse_spec(smoke(**change))
    assert message in str(err.value)


def test_env_expansion(monkeypatch):
    monkeypatch.setenv("OPTUNA_URL", "sqlite:////tmp/x.db")
    spec = parse_spec(smoke(storage={"optuna": "${OPTUNA_URL}",
                                     "mlflow": "${NOT_SET_ANYWHERE:-http://mlflow:5000}"}))
    assert spec.storage.optuna == "sqlite:////tmp/x.db"
    assert spec.storage.mlflow == "http://mlflow:5000"
    with pytest.raises(SpecError, match="storage.optuna: environment variable NOT_SET_ANYWHERE"):
        parse_spec(smoke(storage={"optuna": "${NOT_SET_ANYWHERE}"}))
    assert parse_spec(smoke(base={"data_dir": "${NOT_SET_ANYWHERE:-}"})).base["data_dir"] is None


def test_literal_password_rejected(monkeypatch):
    with pytest.raises(SpecError, match="storage.optuna: holds a literal password"):
        parse_spec(smoke(storage={"optuna": "postgresql://optuna:hunter2@db/optuna"}))
    monkeypatch.setenv("PGPASSWORD", "hunter2")
    spec = parse_spec(smoke(storage={"optuna": "postgresql://optuna:${PGPASSWORD}@db/optuna"}))
    assert spec.storage.optuna == "postgresql://optuna:hunter2@db/optuna"


def test_storage_precedence(tmp_path, monkeypatch):
    spec = parse_spec(smoke())
    local = storage_for(spec, tmp_path)
    assert local.optuna == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert local.mlflow == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert local.artifacts == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("DAGSTUDY_HOME", str(tmp_path / "home"))
    assert storage_for(spec).optuna == f"sqlite:///{tmp_path / 'home' / 'optuna.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere' / 'm.db'}")
    assert storage_for(spec).artifacts == (tmp_path / "elsewhere" / "mlartifacts").as_uri()
    monkeypatch.setenv("DAGSTUDY_OPTUNA_STORAGE", "postgresql://db/optuna")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    remote = storage_for(spec)
    assert (remote.optuna, remote.mlflow, remote.artifacts) == (
        "postgresql://db/optuna", "http://mlflow:5000", None)
    pinned = parse_spec(smoke(storage={"optuna": "sqlite:////pinned.db"}))
    assert storage_for(pinned).optuna == "sqlite:////pinned.db"


def test_objective_lower_confidence_bound():
    assert Objective().score([0.8, 0.9]) == pytest.approx(0.85)
    lcb = Objective(lcb_z=2.0).score([0.8, 0.9])
    assert lcb == pytest.approx(0.85 - 2.0 * 0.0707107 / 2 ** 0.5, rel=1e-5)
    assert Objective(direction="minimize", lcb_z=2.0).score([0.8, 0.9]) > 0.85
    assert Objective().score([0.8, None]) is None


def test_conditional_parameters_follow_the_choice():
    spec = parse_spec(smoke())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        overrides = suggest(trial, spec.search, spec.base_config())
        spec.config_for(overrides)
        assert ("fanin" in trial.params) == (overrides["topology"] == "fanin")
        assert ("optimizer.sgd.momentum" in trial.params) == (overrides["optimizer"] == "sgd")
        assert isinstance(overrides["depth"], int)
        seen.add((overrides["topology"], overrides["optimizer"]))
        study.tell(trial, 0.0)
    assert len(seen) == 6


def test_combinations_cover_every_categorical_choice():
    spec = parse_spec(smoke())
    combos = list(combinations(spec.search, spec.base_config()))
    # topology 3 x width 2 x batch 2 x optimizer 2, ranges at low and at high
    assert len(combos) == 2 * 3 * 2 * 2 * 2
    assert {c["topology"] for c in combos} == {"layered", "dag", "fanin"}
    assert all(("fanin" in c) == (c["topology"] == "fanin") for c in combos)
    assert {c["depth"] for c in combos} == {1, 3}
