"""Confirmation on the real trainer (digits, small nets): planted effects and A/A comparisons."""

import json

import numpy as np
import pytest

from dagstudy.config import TrainConfig
from dagstudy.confirmation.analyse import first_degrading_depth
from dagstudy.confirmation.plan import local_runner, matched_width, param_count, plan
from dagstudy.confirmation.report import write_report
from dagstudy.confirmation.spec import ConfirmSpec

BASE = dict(dataset="digits", depth=2, width=16, epochs=4, optimizer="sgd", lr=0.05)
ACCURACY = dict(metric="test_accuracy", higher_is_better=True, margin=0.01)
"""OPT-FULLBATCH's registry default is log10 training loss; these planted arms are judged on
accuracy, so they say so."""


def run(ideas: dict, seeds: int = 10, **kw):
    from dagstudy.confirmation.run import confirm

    spec = ConfirmSpec(name="test", base=BASE, seeds=seeds, n_resamples=2000, ideas=ideas, **kw)
    return spec, confirm(spec, local_runner("cpu"))


@pytest.fixture(scope="module")
def planted():
    return run({
        # learning rate x100: diverges; must be flagged worse, never confirmed
        "OPT-FULLBATCH": dict(treatment={"lr": 5.0}, **ACCURACY),
        # the same arm twice: must not be confirmed
        "OPT-JITTER": dict(treatment={}),
        # a real, large effect at 4 epochs: the DAG beats a 2-block MLP of the same budget
        "DAG-DENSE": dict(control={"topology": "layered"}, treatment={"topology": "dag"},
                          match_params=True),
    })


def test_broken_treatment_is_flagged_worse(planted):
    _, outcome = planted
    v = {v.name: v for v in outcome.verdicts}["OPT-FULLBATCH"]
    assert v.verdict == "ruled out" and "worse" in v.reason
    assert v.treatment_mean < 0.2 < 0.7 < v.control_mean


def test_same_arm_twice_is_not_confirmed(planted):
    _, outcome = planted
    v = {v.name: v for v in outcome.verdicts}["OPT-JITTER"]
    assert v.verdict != "confirmed" and v.diff == 0.0


def test_holm_runs_across_ideas(planted):
    _, outcome = planted
    ps = sorted(v.p for v in outcome.verdicts)
    adjusted = sorted(v.p_adjusted for v in outcome.verdicts)
    assert adjusted[0] == pytest.approx(min(1.0, 3 * ps[0]))


def test_report_files(planted, tmp_path):
    spec, outcome = planted
    files = {p.name for p in write_report(spec, outcome, tmp_path)}
    assert {"report.md", "report.html", "verdicts.json", "forest.png"} <= files
    rows = json.loads((tmp_path / "verdicts.json").read_text())
    keys = {"idea", "metric", "verdict", "control_mean", "treatment_mean", "diff", "ci_low",
            "ci_high", "d_z", "p", "p_adjusted", "seeds", "seeds_needed"}
    assert all(keys <= set(r) for r in rows)
    assert {r["verdict"] for r in rows} <= {"confirmed", "ruled out", "inconclusive"}
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "OPT-FULLBATCH" in html


def test_matched_params_within_five_percent():
    dag = TrainConfig(topology="dag", depth=4, width=32)
    target = param_count(dag, 64, 10)
    layered = matched_width(TrainConfig(topology="layered", depth=4, width=32), target, 64, 10)
    assert abs(param_count(layered, 64, 10) - target) <= 0.05 * target
    assert layered.width > 32


def test_plan_errors_name_the_idea_and_arm():
    spec = ConfirmSpec(name="x", ideas={"DAG-FANIN": dict(treatment={"topology": "fanin"})})
    with pytest.raises(ValueError, match=r"ideas\.DAG-FANIN\.treatment.*fanin"):
        plan(spec)
    # any well-formed ID is a (user-defined) idea now; a malformed one names the built-ins
    with pytest.raises(ValueError, match="not idea IDs.*built-in: DAG-DENSE"):
        ConfirmSpec(name="x", ideas={"DAG SPARSE": dict(treatment={})})
    assert "DAG-SPARSE" in ConfirmSpec(name="x", ideas={"DAG-SPARSE": dict(treatment={})}).ideas


def test_first_degrading_depth():
    assert first_degrading_depth([0.9, 0.92, 0.91, 0.85], [2, 4, 8, 16], 0.02) == 16
    assert first_degrading_depth([0.9, 0.92, 0.93], [2, 4, 8], 0.02) is None


def test_sequential_mode_adds_seeds_only_to_open_ideas(tmp_path, capsys):
    """Through ``run_confirmation`` (what ``dagstudy confirm`` runs): the progress rows of a
    later look are on every look's seeds (an arm of look 2 never meets look 1's other arm)."""
    import io

    from dagstudy.confirmation.run import run_confirmation

    spec = ConfirmSpec(name="test", base=BASE, seeds=6, n_resamples=2000,
                       sequential=dict(enabled=True, looks=2, add_seeds=4), ideas={
                           "OPT-FULLBATCH": dict(treatment={"lr": 5.0}, **ACCURACY),
                           "OPT-JITTER": dict(treatment={"lr": 0.051}, margin=1e-4)})
    rows = io.StringIO()
    outcome = run_confirmation(spec, None, local_runner("cpu"), tmp_path, stdout=rows)
    seeds = {v.name: v.seeds for v in outcome.verdicts}
    assert outcome.looks == 2
    assert seeds["OPT-JITTER"] == 10
    assert np.isfinite([v.p for v in outcome.verdicts]).all()
    jitter = [line for line in rows.getvalue().splitlines() if line.startswith("OPT-JITTER:")]
    assert [line.split(" on ")[1].split()[0] for line in jitter] == ["6", "10"]
    counters = [line[1:].split(" arms")[0].split("/") for line in
                capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert counters and all(int(done) <= int(total) for done, total in counters), counters
    assert int(counters[-1][0]) > 3  # the second look's arms are counted (3 distinct at look 1)


def test_confirm_cli_end_to_end_with_mlflow(tmp_path, capsys):
    """Three ideas through Ray: report files, one MLflow run per arm with idea tags, a JSON
    summary on stdout (``--json``), and the report regenerated from MLflow alone has the same
    verdicts."""
    from mlflow.tracking import MlflowClient

    from dagstudy.cli import main

    study = tmp_path / "c.yaml"
    study.write_text(json.dumps({
        "name": "e2e", "seeds": 4, "n_resamples": 500,
        "base": {**BASE, "epochs": 2},
        "ideas": {
            "OPT-FULLBATCH": {"treatment": {"lr": 5.0}, **ACCURACY},
            "OPT-JITTER": {"treatment": {}},
            "DAG-DENSE": {"control": {"topology": "layered"}, "treatment": {"topology": "dag"}},
        },
    }))
    out, run_dir = tmp_path / "out", tmp_path / "runs"
    assert main(["confirm", str(study), "--run-dir", str(run_dir), "--out", str(out),
                 "--json", "--force"]) == 0
    assert {"report.md", "report.html", "verdicts.json", "forest.png"} <= {
        p.name for p in out.iterdir()}
    summary = json.loads(capsys.readouterr().out)  # stdout holds the JSON summary alone
    parent = summary["mlflow_parent_run"]
    assert [v["idea"] for v in summary["verdicts"]] == ["OPT-FULLBATCH", "OPT-JITTER",
                                                        "DAG-DENSE"]
    assert summary["report"] == str(out / "report.html")
    assert summary["mlflow_runs_url"].endswith("/runs")

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")  # no global tracking URI
    experiment = client.get_experiment_by_name("confirm-e2e")
    runs = client.search_runs([experiment.experiment_id])
    arms = [r.data.tags for r in runs if r.data.tags.get("dagstudy.role") == "arm"]
    assert sorted((t["dagstudy.idea"], t["dagstudy.arm"]) for t in arms) == sorted(
        (i, a) for i in ("OPT-FULLBATCH", "OPT-JITTER", "DAG-DENSE")
        for a in ("control", "treatment"))
    assert all(t["mlflow.parentRunId"] == parent for t in arms)

    regen = tmp_path / "regen"
    assert main(["report", parent, "--run-dir", str(run_dir), "--out", str(regen)]) == 0
    assert json.loads((regen / "verdicts.json").read_text()) == json.loads(
        (out / "verdicts.json").read_text())


def test_corollaries_file_plans_all_fourteen_ideas():
    from pathlib import Path

    from dagstudy.confirmation.loader import load_spec
    from dagstudy.ideas import IDEAS as IDEA_IDS

    spec = load_spec(Path(__file__).resolve().parents[1] / "studies" / "corollaries.yaml")
    # every built-in idea, plus user-defined ones (OPT-LAYERSCALE-FIXED-L)
    assert set(IDEA_IDS) <= set(spec.ideas) and spec.seeds >= 10
    # built-in IDs take their registry defaults: the file no longer states them
    assert spec.ideas["OPT-FISTA"].metric == "log10_train_loss"
    assert spec.ideas["OPT-STOP"].co_primary.metric == "epochs"
    assert spec.ideas["OPT-JITTER"].settings is not None  # the planted spread sweep


def test_builtin_ideas_take_registry_defaults_that_the_file_can_override():
    arms = {"control": {"optimizer": "fullbatch-ista"}, "treatment": {"optimizer": "fista"}}
    spec = ConfirmSpec(name="d", ideas={
        "OPT-FISTA": arms, "OPT-FULLBATCH": {**arms, "margin": 0.3, "diagnostics": []},
        "MY-IDEA": {"treatment": {"width": 64}}})
    fista, full, mine = (spec.ideas[k] for k in ("OPT-FISTA", "OPT-FULLBATCH", "MY-IDEA"))
    assert (fista.metric, fista.higher_is_better, fista.margin) == (
        "log10_train_loss", False, pytest.approx(0.0969))
    assert fista.diagnostics == ["lipschitz", "momentum"]
    assert fista.secondary_metrics == ["passes_to:train_loss:0.01"]
    assert (full.metric, full.margin, full.diagnostics) == ("log10_train_loss", 0.3, [])
    assert (mine.metric, mine.margin, mine.diagnostics) == ("test_accuracy", 0.01, [])
