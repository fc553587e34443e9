"""What a researcher sees after a confirmation: the HTML report as a document (parsed, and
rendered in headless Chromium where it is installed) and the MLflow layout (verdicts on the
parent, arm runs with real per-epoch timestamps, per-seed child runs grouped by config hash)."""

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dagstudy import __version__
from dagstudy.confirmation.plan import local_runner
from dagstudy.confirmation.run import run_confirmation
from dagstudy.confirmation.spec import ConfirmSpec
from dagstudy.tracking.tracker import Tracker

pytestmark = pytest.mark.slow

BASE = dict(dataset="digits", depth=2, width=8, epochs=3, optimizer="sgd", lr=0.05,
            probe_size=64)
IDEAS = {
    "OPT-FULLBATCH": dict(treatment={"lr": 5.0}, diagnostics=["dead_fraction"]),
    "OPT-JITTER": dict(treatment={}),
    "DAG-DENSE": dict(control={"topology": "layered", "width": 13},
                      treatment={"topology": "dag"}, diagnostics=["grad_reach"]),
}


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """One small confirmation (3 ideas, 3 seeds, 3 epochs) recorded in a SQLite MLflow."""
    root = tmp_path_factory.mktemp("confirmed")
    spec = ConfirmSpec(name="doc", base=BASE, seeds=3, n_resamples=200, ideas=IDEAS)
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "confirm-doc",
                      settings=spec.model_dump())
    outcome = run_confirmation(spec, None, local_runner("cpu"), root / "report", tracker)
    return root, tracker, outcome


class _Tables(HTMLParser):
    """Tables (as lists of rows of cell texts, with their class) and all text of a page."""

    def __init__(self):
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append((dict(attrs).get("class", ""), []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def test_html_report_is_a_document(confirmed):
    root, _, _ = confirmed
    page = (root / "report" / "report.html").read_text()
    parsed = _Tables()
    parsed.feed(page)
    text = " ".join(parsed.text)
    verdict_tables = [rows for cls, rows in parsed.tables if cls == "verdicts"]
    assert len(verdict_tables) == 1 + len(IDEAS)  # the summary, then one per idea
    summary = verdict_tables[0]
    assert [row[0] for row in summary[1:]] == list(IDEAS)
    assert all(row[8] in ("confirmed", "ruled out", "inconclusive") for row in summary[1:])
    assert "**" not in page and "|---" not in page and "<pre>" not in page
    assert __version__ in text and "torch" in text and "Methods" in text
    arms = {rows[1][0]: rows for cls, rows in parsed.tables if cls == "arms"}
    dense = [rows for rows in arms.values() if "topology" in rows[0]]
    assert dense and dense[0][0][:3] == ["arm", "topology", "width"]  # the differing fields
    assert [r[1:3] for r in dense[0][1:]] == [["layered", "13"], ["dag", "8"]]
    assert "parameters" in dense[0][0]
    # numbers at sensible precision: no float printed with its full repr
    assert not any(len(cell) > 12 and cell.replace(".", "").replace("-", "").isdigit()
                   for _, rows in parsed.tables for row in rows for cell in row)
    files = {p.name for p in (root / "report").iterdir()}
    assert {f"curves-{i}.png" for i in IDEAS} | {"pairs-DAG-DENSE.png", "forest.png"} <= files


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(confirmed, tmp_path):
    root, _, _ = confirmed
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--window-size=1200,3000", f"--screenshot={shot}",
                    (root / "report" / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_parent_run_holds_verdicts_and_the_table(confirmed):
    _, tracker, outcome = confirmed
    client = MlflowClient(tracker.uri)
    experiment = client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = client.search_runs([tracker.experiment_id],
                                   "tags.`dagstudy.role` = 'study'")
    assert parent.info.run_id == tracker.parent_run_id
    for v in outcome.verdicts:
        assert parent.data.tags[f"{v.name}.verdict"] == v.verdict
        assert parent.data.metrics[f"{v.name}.p_adjusted"] == pytest.approx(v.p_adjusted)
        assert f"{v.name}.d_z" in parent.data.metrics or v.d_z != v.d_z
    table = client.download_artifacts(parent.info.run_id, "verdicts_table.json",
                                      str(Path(tracker.uri.removeprefix("sqlite:///")).parent))
    assert json.loads(Path(table).read_text())["columns"][:3] == ["idea", "metric", "verdict"]


def test_arm_runs_have_real_epoch_timestamps_and_seed_children(confirmed):
    _, tracker, _ = confirmed
    client = MlflowClient(tracker.uri)
    arms = client.search_runs([tracker.experiment_id], "tags.`dagstudy.role` = 'arm'")
    assert len(arms) == 2 * len(IDEAS)
    for arm in arms:
        history = sorted(client.get_metric_history(arm.info.run_id, "train_loss"),
                         key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        assert arm.info.start_time <= history[0].timestamp
        assert all(a.timestamp <= b.timestamp for a, b in zip(history, history[1:]))
        assert arm.info.end_time >= history[-1].timestamp
        assert client.get_metric_history(arm.info.run_id, "test_accuracy") == []  # final only
        assert "final_test_accuracy_mean" in arm.data.metrics
        params = arm.data.params
        assert not any(k.startswith("synthetic") for k in params)  # digits: no synthetic.*
        assert "None" not in params.values()
        seeds = client.search_runs([tracker.experiment_id], (
            f"tags.`mlflow.parentRunId` = '{arm.info.run_id}'"))
        assert sorted(int(s.data.params["seed"]) for s in seeds) == [0, 1, 2]
        assert {s.data.tags["dagstudy.config_hash"] for s in seeds} == {
            arm.data.tags["dagstudy.config_hash"]}
        for s in seeds:
            assert len(client.get_metric_history(s.info.run_id, "val_accuracy")) == len(history)
            assert "final_test_accuracy" in s.data.metrics
