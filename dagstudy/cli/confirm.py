"""``dagstudy confirm`` (paired arms -> verdicts, report, MLflow) and ``dagstudy report`` (a report
rebuilt from MLflow alone)."""

from __future__ import annotations

from pathlib import Path

from dagstudy.cli.errors import UsageError


def add_parsers(sub) -> None:
    p = sub.add_parser("confirm", help="confirm or rule out each idea: paired arms -> verdicts")
    p.add_argument("file", help="confirmation file, e.g. studies/corollaries.yaml")
    p.add_argument("--ideas", default=None, help="comma list of idea IDs (default: all in file)")
    p.add_argument("--seeds", type=int, default=None, help="paired seeds (overrides the file)")
    p.add_argument("--out", default=None, help="report directory (default: under the run dir)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local Ray)")
    p.add_argument("--local", action="store_true", help="train in this process, without Ray")
    p.add_argument("--run-dir", default=None, help="local store (default $DAGSTUDY_HOME or "
                   "./dagstudy-runs)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--force", action="store_true",
                   help="run even where an idea's seeds cannot reach significance under Holm "
                   "(a loud warning instead of the refusal)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary (verdicts, report, MLflow run) on stdout; the "
                   "table goes to stderr")
    p.add_argument("--resume", action="store_true",
                   help="reuse the arms that earlier runs of this confirmation (same name and "
                   "run dir) finished with the same code, torch and --device; train the rest")
    p.set_defaults(run=run_confirm)

    p = sub.add_parser("report", help="regenerate a confirmation report from MLflow alone")
    p.add_argument("run_id", help="the confirmation's MLflow parent run id")
    p.add_argument("--out", default=None, help="report directory (default: under the run dir)")
    p.add_argument("--run-dir", default=None)
    p.set_defaults(run=run_report)


def run_confirm(args) -> int:
    import json
    import sys
    import time

    import ray

    from dagstudy.confirmation.journal import ArmJournal, code_fingerprint, journaled
    from dagstudy.confirmation.loader import load_spec, parse_ideas
    from dagstudy.confirmation.plan import local_runner
    from dagstudy.confirmation.power_check import unreachable
    from dagstudy.confirmation.provenance import provenance
    from dagstudy.confirmation.report import verdict_rows
    from dagstudy.confirmation.run import run_confirmation
    from dagstudy.confirmation.tune import TuneError, tune
    from dagstudy.study.cluster import connect_ray, ray_runner
    from dagstudy.study.progress import progress_printer
    from dagstudy.study.storage import run_dir_for, storage_for
    from dagstudy.tracking.client import runs_url
    from dagstudy.tracking.tracker import Tracker
    from dagstudy.trainer import resolve_device

    if args.seeds is not None and args.seeds < 2:
        raise UsageError("--seeds: must be >= 2 (10 or more for a verdict)")
    try:
        resolve_device(args.device)
    except ValueError as e:
        raise UsageError(f"--{e}") from None
    storage = storage_for(None, args.run_dir)
    try:
        spec = load_spec(args.file, args.seeds, storage.optuna, args.device)
        ideas = parse_ideas(args.ideas, spec)
    except ValueError as e:
        raise UsageError(str(e)) from None
    problems = unreachable(spec, ideas)
    if problems and not args.force:
        more = f"; {len(problems) - 1} more idea(s) likewise" if len(problems) > 1 else ""
        raise UsageError(f"{args.file}: {problems[0]}{more} (more seeds, fewer ideas, or "
                         "--force)")
    for problem in problems:
        print(f"WARNING (--force): {problem}; its verdict cannot be 'confirmed'",
              file=sys.stderr, flush=True)
    tuned = any(spec.tune_for(i) for i in (ideas or spec.ideas))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = (Path(args.out) if args.out
           else run_dir_for(args.run_dir) / "confirm" / f"{spec.name}-{stamp}")
    chosen = spec.model_dump()
    chosen["ideas"] = {k: v for k, v in chosen["ideas"].items() if ideas is None or k in ideas}
    tracker = Tracker(storage.mlflow, f"confirm-{spec.name}", artifact_location=storage.artifacts,
                      settings=chosen, run_tags={"dagstudy.role": "confirmation"})
    started = False
    if not args.local or tuned:  # tuning studies always run on Ray workers
        print("starting Ray...", file=sys.stderr, flush=True)
        started = connect_ray(args.address)
    runner = local_runner(args.device) if args.local else ray_runner(device=args.device)
    journal = ArmJournal(run_dir_for(args.run_dir) / "confirm" / f"{spec.name}.arms.jsonl",
                         code_fingerprint(args.device))
    runner = journaled(runner, journal, args.resume, on_reused=lambda n: print(
        f"--resume: {n} arm(s) reused from {journal.path}", file=sys.stderr, flush=True))
    if not args.resume and journal.finished():
        print(f"{journal.path} holds arms an earlier run of {spec.name!r} finished with this "
              "code; --resume would reuse them", file=sys.stderr, flush=True)
    meta = provenance(args.file, ["dagstudy", *sys.argv[1:]])
    try:
        tuning = None
        if tuned:
            tuning = tune(spec, ideas, run_dir=args.run_dir, address=args.address,
                          device=args.device, progress=progress_printer(),
                          on_study=lambda name, status: print(f"tuning study {name}: {status}",
                                                              file=sys.stderr),
                          mlflow_parent=(tracker.experiment, tracker.parent_run_id)
                          if tracker.parent_run_id else None)
        outcome = run_confirmation(spec, ideas, runner, out, tracker, tuning, meta=meta,
                                   stdout=sys.stderr if args.json else sys.stdout)
    except TuneError as e:
        raise UsageError(str(e)) from None
    finally:
        if started:
            ray.shutdown()
    url = runs_url(storage.mlflow, tracker.experiment_id)
    if args.json:
        print(json.dumps({"name": spec.name, "report": str(out / "report.html"),
                          "mlflow_parent_run": tracker.parent_run_id, "mlflow_runs_url": url,
                          "looks": outcome.looks, "verdicts": verdict_rows(outcome)}))
        return 0
    if url:
        print(f"mlflow runs: {url}" + ("   (start the UI with `dagstudy ui`)"
                                        if url.startswith("http://127.0.0.1") else ""))
    print(f"mlflow parent run: {tracker.parent_run_id}")
    return 0


def run_report(args) -> int:
    from dagstudy.confirmation.run import regenerate
    from dagstudy.study.storage import run_dir_for, storage_for

    storage = storage_for(None, args.run_dir)
    out = Path(args.out) if args.out else run_dir_for(args.run_dir) / "report" / args.run_id
    try:
        files = regenerate(storage.mlflow, args.run_id, out)
    except Exception as e:  # MLflow's own errors for an unknown run id or missing artifact
        raise UsageError(f"run_id: no confirmation report for {args.run_id!r} ({e})") from None
    print("\n".join(str(f) for f in files))
    return 0
