"""The layered package: import order, no cycles, no heavy imports in the trainer layer, small
modules, and one idea registry that every idea-bearing class and file agrees with."""

from __future__ import annotations

from pathlib import Path

import pytest
from import_contract import (
    MAX_LINES,
    cycles,
    forbidden_imports,
    layer_violations,
    read_graph,
)

from dagstudy.ideas import IDEAS, ideas_touched
from dagstudy.optim import VARIANTS
from dagstudy.revival import POLICIES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return read_graph(ROOT)


def test_imports_go_down_the_layers(graph):
    assert layer_violations(graph) == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_trainer_layer_has_no_orchestration_imports(graph):
    assert forbidden_imports(graph) == []


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "dagstudy").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_checks_catch_an_upward_import_a_cycle_and_a_banned_package():
    synthetic = {
        "dagstudy.trainer": {"dagstudy.config", "dagstudy.study.driver", "optuna"},
        "dagstudy.config": {"dagstudy.model.dagnet"},
        "dagstudy.model.dagnet": {"dagstudy.model.topology"},
        "dagstudy.model.topology": {"dagstudy.model.dagnet"},
        "dagstudy.study.driver": {"dagstudy.trainer"},
        "dagstudy.optim.sgd": {"dagstudy.revival.base"},
        "dagstudy.revival.base": set(),
        "dagstudy.confirmation.run": {"ray", "dagstudy.study.driver"},
        "dagstudy.newthing": set(),
    }
    violations = layer_violations(synthetic)
    assert any("dagstudy.trainer imports dagstudy.study.driver" in v for v in violations)
    assert any("dagstudy.optim.sgd imports dagstudy.revival.base" in v for v in violations)
    assert any("'newthing' is in no layer" in v for v in violations)
    assert not any("study.driver imports dagstudy.trainer" in v for v in violations)  # downward
    assert ["dagstudy.model.dagnet", "dagstudy.model.topology", "dagstudy.model.dagnet"] in (
        cycles(synthetic))
    assert forbidden_imports(synthetic) == ["dagstudy.confirmation.run imports ray",
                                            "dagstudy.trainer imports optuna"]


def test_every_idea_has_a_home_that_exists():
    for idea in IDEAS.values():
        assert (ROOT / "dagstudy" / idea.home).is_file(), (idea.id, idea.home)


def test_every_variant_and_policy_names_a_registered_idea():
    for registry in (VARIANTS, POLICIES):
        for name, cls in registry.items():
            assert cls.idea is None or cls.idea in IDEAS, (name, cls.idea)


def test_the_registry_matches_ideas_md():
    text = (ROOT.parent / "shared" / "IDEAS.md").read_text()
    listed = [line.split("|")[1].strip() for line in text.splitlines()
              if line.startswith("| ") and line.split("|")[1].strip().isupper()
              and "-" in line.split("|")[1]]
    assert listed == list(IDEAS)


@pytest.mark.parametrize(("config", "expected"), [
    ({"topology": "layered", "optimizer": "sgd", "revival": "none"}, []),
    ({"topology": "fanin", "depth": 4, "optimizer": "adam", "revival": "none"},
     ["DAG-FANIN"]),
    ({"topology": "layered", "optimizer": "fista", "optimizer_params": {"depth_scale": True},
      "revival": "split", "jitter_spread": 0.1, "grad_floor": 0.01, "stop_on_ratio": True},
     ["OPT-FULLBATCH", "OPT-LAYERSCALE", "OPT-FISTA", "OPT-STOP", "OPT-JITTER", "REV-SPLIT",
      "GRAD-FLOOR"]),
])
def test_ideas_touched_by_a_configuration(config, expected):
    assert ideas_touched(config) == expected


def test_the_readme_idea_table_is_the_registry():
    from dagstudy.ideas import markdown_table

    assert markdown_table() in (ROOT / "README.md").read_text()
