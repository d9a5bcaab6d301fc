"""``hessian-powerlaw reproduce NAME``: rerun one of the paper's findings, or ``all`` of them."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hessian_powerlaw.cli._common import add_command, add_json, add_quiet, print_json
from hessian_powerlaw.errors import UserInputError

# the experiment names, without importing the library (``--help`` stays fast)
NAMES: tuple[str, ...] = (
    "trained-vs-random",
    "optimizers",
    "batch-size",
    "width",
    "depth",
    "data-size",
    "label-noise",
    "training-progress",
    "eigengaps",
    "llm-generalization",
    "llm-layers",
)

EXAMPLES = """\
  hessian-powerlaw reproduce trained-vs-random       # CPU scale, into results/trained-vs-random
  hessian-powerlaw reproduce optimizers --quick --out /tmp/opt
  hessian-powerlaw reproduce all --quick                  # every experiment, smallest settings
  hessian-powerlaw reproduce all --write-docs             # and regenerate docs/reproduction.md
  hessian-powerlaw reproduce all --plan                   # what the cpu scale runs, and how long
  hessian-powerlaw reproduce width --scale paper --data-root ~/data   # the paper's settings (GPU)
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``reproduce``."""
    parser = add_command(
        subparsers,
        "reproduce",
        "rerun one of the paper's experiments (or all) and compare with the paper's numbers",
        EXAMPLES,
        run,
    )
    parser.add_argument("name", metavar="NAME", help=f"one of: {', '.join(NAMES)}, or all")
    parser.add_argument(
        "--quick", action="store_true", help="the smallest settings (same as --scale quick)"
    )
    parser.add_argument(
        "--scale", choices=("quick", "cpu", "paper"), default=None,
        help="cpu (default): the paper's data and K = 1000, cut to run in 4-5 hours on a "
        "2-core CPU; quick: the smallest settings (CI); paper: the paper's settings, for GPUs",
    )  # fmt: skip
    parser.add_argument(
        "--plan", action="store_true",
        help="print each experiment's data, models, K, samples, epochs, spectra and estimated "
        "minutes at the scale, and exit without running anything",
    )  # fmt: skip
    parser.add_argument(
        "--out", metavar="DIR", default=None,
        help="output folder (default results/NAME; with all, one sub-folder per experiment "
        "under DIR, default results)",
    )  # fmt: skip
    parser.add_argument(
        "--data-root", metavar="DIR", default="data",
        help="--scale paper: folder with cifar-10-batches-bin/ (MNIST and Fashion-MNIST come "
        "from their packages)",
    )  # fmt: skip
    parser.add_argument(
        "--device", default=None, help="torch device for training and Hessians (e.g. cuda)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="torch CPU threads in all, split between the workers (default: torch's choice); "
        "1 is much faster on a busy machine",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="compute N conditions side by side in worker processes that share the torch "
        "threads (default: 2 at the cpu and paper scales on a CPU with 2 or more cores, else "
        "1); rerunning resumes either way",
    )  # fmt: skip
    parser.add_argument(
        "--write-docs", action="store_true",
        help="with all: regenerate docs/reproduction.md and docs/figures/ from these results",
    )  # fmt: skip
    parser.add_argument(
        "--docs-dir", metavar="DIR", default="docs", help="where --write-docs writes"
    )
    parser.add_argument(
        "--docs-only", action="store_true",
        help="with all --write-docs: write the page from the results.json of each experiment "
        "already under --out, computing nothing (e.g. results made on different machines)",
    )  # fmt: skip
    add_json(parser)
    add_quiet(parser)
    parser.set_defaults(resume_hint=resume_hint)
    return parser


def resume_hint(args: argparse.Namespace) -> str:
    """The runner keeps training runs (checkpointed) and each condition's analysis file."""
    out = args.out or ("results" if args.name == "all" else f"results/{args.name}")
    return (
        "rerunning the same command resumes: the training runs (from their last checkpoint) "
        f"and the analyses already finished under {out} are reused"
    )


def _scale_name(args: argparse.Namespace) -> str:
    if args.quick and args.scale not in (None, "quick"):
        raise UserInputError(f"--quick and --scale {args.scale} contradict; give one of them")
    return "quick" if args.quick else (args.scale or "cpu")


def run(args: argparse.Namespace) -> int:
    """Run ``reproduce``; returns the exit status."""
    from hessian_powerlaw.experiments import EXPERIMENTS, get_experiment, get_scale

    scale = get_scale(_scale_name(args), args.data_root).for_device(args.device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.name == "all":
        names = list(EXPERIMENTS)
        root = Path(args.out or "results")
        outs = {name: root / name for name in names}
    else:
        names = [get_experiment(args.name).name]
        outs = {names[0]: Path(args.out or f"results/{names[0]}")}
    if args.write_docs and args.name != "all":
        raise UserInputError("--write-docs needs all experiments: use `reproduce all --write-docs`")
    if args.plan:
        return _print_plan([EXPERIMENTS[name] for name in names], scale, args.json)

    if args.docs_only and not (args.write_docs and args.name == "all"):
        raise UserInputError("--docs-only goes with `reproduce all --write-docs`")
    start = time.perf_counter()
    if args.docs_only:
        from hessian_powerlaw.experiments import load_results

        # "out" is where the results (and their figures) are now
        records = [{**load_results(outs[name]), "out": str(outs[name])} for name in names]
    else:
        records = _run(args, names, outs, scale)
    docs_path = None
    if args.write_docs:
        from hessian_powerlaw.experiments.docs import write_docs

        device = f" --device {args.device}" if args.device not in (None, "cpu") else ""
        flags = " --docs-only" if args.docs_only else _flags(scale.name) + device
        command = "hessian-powerlaw reproduce all" + flags + " --write-docs"
        docs_path = write_docs(records, args.docs_dir, command)
    if args.json:
        print_json(records[0] if len(records) == 1 else records)
        return 0
    if docs_path is not None:
        print(f"wrote {docs_path}")
    print(f"total time {time.perf_counter() - start:.1f} s")
    return 0


def _run(
    args: argparse.Namespace, names: list[str], outs: dict[str, Path], scale: Any
) -> list[dict[str, Any]]:
    """Compute (or reuse) every condition of ``names`` and summarise each experiment."""
    from hessian_powerlaw.experiments import EXPERIMENTS, run_experiment
    from hessian_powerlaw.experiments.runner import StoredResults

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    workers = _workers(args, scale.name)
    shared = _shared_dirs(outs.values(), scale)
    if workers > 1:
        import torch

        from hessian_powerlaw.experiments.parallel import compute_pending

        threads = max(1, torch.get_num_threads() // workers)
        jobs = [(EXPERIMENTS[name], outs[name]) for name in names]
        compute_pending(jobs, scale, workers=workers, threads=threads, device=args.device,
                        log=log, shared=shared)  # fmt: skip
    # what the workers stored, and the folders they created, join the index
    stored = StoredResults(_shared_dirs(outs.values(), scale))
    records = []
    for name in names:
        result = run_experiment(
            EXPERIMENTS[name], scale, outs[name], device=args.device,
            progress=not args.quiet, log=log, stored=stored,
        )  # fmt: skip
        record = result.to_dict()
        records.append(record)
        if not args.json:
            _print_summary(record)
    return records


def _shared_dirs(outs: Iterable[Path], scale: Any) -> list[Path]:
    """The analyses folders of every experiment folder beside the output folders.

    ``reproduce all`` writes ROOT/NAME for each experiment, and ``reproduce NAME`` writes
    results/NAME by default: a condition another experiment already computed there, with the
    same settings, is copied instead of computed again.
    """
    from hessian_powerlaw.experiments.runner import condition_dirs

    found = []
    for parent in {Path(out).parent for out in outs}:
        try:
            children = list(parent.iterdir())
        except OSError:  # missing or unreadable: nothing to share
            continue
        for child in children:
            folder = condition_dirs(child, scale)[1]
            try:
                if folder.is_dir():
                    found.append(folder)
            except OSError:
                continue
    return sorted(found)


def _workers(args: argparse.Namespace, scale: str) -> int:
    """``--workers``; else the budget's ``WORKERS`` on a CPU (at most one per core), 1 on a GPU.

    The quick scale is too small to gain from worker processes: 1 there too.
    """
    from hessian_powerlaw.experiments.budget import WORKERS

    if args.workers is not None:
        return int(args.workers)
    if scale == "quick" or args.device not in (None, "cpu"):
        return 1
    return min(WORKERS, os.cpu_count() or 1)


def _print_plan(experiments: list[Any], scale: Any, as_json: bool) -> int:
    from hessian_powerlaw.experiments.budget import (
        BUDGET_MINUTES,
        PLAN_COLUMNS,
        WORKERS,
        estimate_all,
        plan_rows,
        wall_minutes,
    )
    from hessian_powerlaw.report.tables import text_table

    estimates = estimate_all(experiments, scale)
    if as_json:
        print_json([{**e.to_dict(), "minutes": e.minutes} for e in estimates])
        return 0
    print(f"{scale.name} scale: estimated minutes of one worker with one torch thread, "
          f"{WORKERS} side by side on 2 CPU cores (nothing is run)")  # fmt: skip
    print()
    print(text_table(plan_rows(estimates), PLAN_COLUMNS))
    low = sum(e.minutes[0] for e in estimates)
    high = sum(e.minutes[1] for e in estimates)
    print(f"wall time with {WORKERS} workers: about {wall_minutes(low):.0f}-"
          f"{wall_minutes(high):.0f} minutes")  # fmt: skip
    budget = BUDGET_MINUTES.get(scale.name)
    if budget is not None:
        print(f"budget of `reproduce all` at this scale: {budget:.0f} minutes")
        if len(experiments) > 1 and wall_minutes(high) > budget:
            print(f"the estimate is over the budget by up to {wall_minutes(high) - budget:.0f} "
                  "minutes")  # fmt: skip
    for experiment in experiments:
        for note in experiment.notes_at(scale):
            print(f"- {experiment.name}: {note}")
    return 0


def _flags(scale: str) -> str:
    return {"quick": " --quick", "cpu": "", "paper": " --scale paper"}[scale]


def _print_summary(record: dict[str, Any]) -> None:
    from hessian_powerlaw.experiments.tables import markdown_table, verdict_line

    print(f"== {record['experiment']} ({record['scale']} scale, {record['seconds']:.0f} s)")
    for line in record.get("settings") or []:
        print(line)
    print(markdown_table(record["rows"], record["columns"]))
    print(verdict_line(record).replace("**", ""))
    count = len(record["figures"])
    print(f"wrote {record['out']}/results.json, table.md and {count} figure{'s' * (count != 1)}")
    print()
