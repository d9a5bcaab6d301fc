"""Paper-scale top-K: the tool vs ARPACK vs hessian-eigenthings on LeNet / Fashion-MNIST (#13).

The problem is the paper's (PAPER.md): LeNet (zoo model ``lenet``, 28x28 inputs, 61,706
parameters) trained on Fashion-MNIST with

    hessian-powerlaw train --model lenet --data fashion-mnist:10000 --out RUN \\
        --epochs 8 --lr 0.05 --schedule constant

and its Hessian on 1,000 training samples in one batch, built exactly as
``hessian-powerlaw spectrum --samples 1000`` builds it (``zoo.load_data(spec, seed=0)``,
``analysis.load_model_state``, ``data.hessian_batches(samples, None, 0)``). For each K, side by
side on that same ``HessianOperator``:

- ``tool``: ``top_eigenpairs(op, k=K)`` with the library's defaults at run time: the operator
  dtype of the ``spectrum`` command (``--dtype`` overrides), ``tol=None`` (``default_tol`` of
  that dtype), the default block and basis sizes; ``--solver-opts key=value,...`` passes
  further keyword arguments through;
- ``arpack``: ``scipy.sparse.linalg.eigsh(op64.to_scipy(), k=K, which="LA", tol=--arpack-tol)``
  on a float64 operator (one product per call). It is also the float64 REFERENCE that every
  eigenvalue error is measured against; ``|theta - lambda| <= ||r|| <= tol |theta|``, so the
  reference is good to ``--arpack-tol`` relative. The reference eigenvalues are cached as .npy
  (keyed by checkpoint hash, model, data, samples, K, tol) so that runs without ``arpack``
  reuse them; ``--reference FILE`` names the file explicitly;
- ``eigenthings``: ``hessian_eigenthings.lanczos(LambdaOperator(op.matvec, ...), k=K, seed=0)``
  of hessian-eigenthings 1.0.0a5 with its defaults (``max_iter = 2K`` single-vector Lanczos
  steps, ``tol=1e-4``, ``which="LM"``, full reorthogonalization only when ``max_iter <= 50``),
  applied to the same operator through its ``CurvatureOperator`` adapter (``--peer-dtype``,
  float64 by default, so that its errors are the algorithm's, not float32 rounding);
  ``--peer-opts key=value,...`` overrides its keyword arguments;
- ``eigenthings-native`` (not run by default): the same ``lanczos`` on the peer's own
  ``HessianOperator(model, [batch], supervised_loss(CrossEntropyLoss()))`` (double-backward
  products, one column at a time), model and data cast to ``--peer-dtype``.

Every method runs in a fresh process (multiprocessing "spawn"): its peak RSS is the
high-water mark of that process during the solve (``VmHWM`` after resetting it through
``/proc/self/clear_refs`` once the data, model and operator are set up; psutil sampling where
that is not allowed), reported with the set-up RSS it started from. One product before the
solve warms the operator up (activation measurement, tracing; seconds in the JSON) and is not
counted. Products are the operator's ``num_matvecs`` (columns), product seconds its
``seconds`` (a counting wrapper for the peer's own operator). For each method: the
power-law fit ``fit_power_law`` of its eigenvalues after ``resolved_eigenvalues`` (what
``spectrum`` does), and its errors against the reference: the largest relative error
``|lambda_i - ref_i| / |ref_i|`` (rank by rank), how many of the top K are off by more than
1e-3, copies of one eigenvalue that the reference has once ("ghosts"), reference eigenvalues
that no returned value matches within 1e-3 ("missed"), negative values returned.

``--profile`` runs the tool's solve under cProfile (its row says so) and prints the top
functions by cumulative time and a breakdown: products, orthogonalization, Rayleigh-Ritz
eigh, restarts, certification, the rest (Python, assembling T). Full run (the lead's):

    .venv/bin/python benchmarks/bench_paper_scale.py --checkpoint /tmp/bench/RUN/final.pt \\
        --k 300,1000 --json bench_paper_scale.json --write-docs

Long runs can be split: each K or method in its own run (``--json`` and ``--merge`` collect
the rows in one file), or in parallel on separate cores (``taskset -c 1 ... --threads 1``)
into separate JSON files that ``--render A.json B.json --write-docs`` merges without running
anything. The docs list every command that produced a row.

Quick check of the plumbing: ``--k 10 --samples 20`` (one to three minutes on a busy 2-core
machine; the peer only turns its reorthogonalization off above K = 25, so
``--peer-opts reorthogonalize=False`` shows that mode at small K). Without ``--checkpoint``
(or when the file is missing) the model is trained first, through
``hessian_powerlaw.training.train``, into ``--cache-dir``; ``--random-init`` uses the seeded
initialisation instead.
"""

from __future__ import annotations

import argparse
import ast
import cProfile
import datetime
import hashlib
import io
import json
import multiprocessing
import os
import platform
import pstats
import re
import shlex
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

METHODS = ("tool", "arpack", "eigenthings", "eigenthings-native")
DEFAULT_METHODS = "tool,arpack,eigenthings"
# the paper-scale training run of issue #13 (the other TrainConfig fields at their defaults:
# sgd-momentum 0.9, batch 128, weight decay 5e-4, seed 0)
TRAIN_SETTINGS = {"epochs": 8, "lr": 0.05, "schedule": "constant"}
OFF = 1e-3  # the accuracy the fit needs (DESIGN.md): each eigenvalue to 1e-3 relative
GHOST = 1e-6  # two returned values this close (relative) are one eigenvalue found twice
DOCS_HEADING = "## Paper-scale top-K: LeNet on Fashion-MNIST (`benchmarks/bench_paper_scale.py`)"
REPO = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- set-up


def parse_opts(text: str | None) -> dict[str, Any]:
    """``"block_size=8,tol=1e-5,which=LA"`` -> ``{"block_size": 8, "tol": 1e-05, ...}``."""
    opts: dict[str, Any] = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"options must be key=value[,key=value...], got {item!r}")
        try:
            opts[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            opts[key.strip()] = value.strip()  # a bare word: a string (which=LA)
    return opts


def tool_default_dtype() -> str:
    """The operator dtype that ``hessian-powerlaw spectrum`` uses on a CPU when none is given.

    The flag's default is ``None``, resolved by the device when the options are built.
    """
    from hessian_powerlaw.options import AnalysisOptions

    try:
        from hessian_powerlaw.cli import build_parser

        args = build_parser().parse_args(["spectrum", "--model", "lenet", "--data", "digits"])
        return AnalysisOptions.from_args(args).dtype
    except Exception:  # noqa: BLE001 - fall back on the library's default
        return AnalysisOptions().dtype


def limit_threads(threads: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    # scipy's and numpy's BLAS get the same threads as torch (ARPACK's own work is BLAS)
    threadpool_limits(threads)


def file_key(path: str | None) -> str:
    if path is None:
        return "random-init"
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return digest[:12]


def ensure_checkpoint(args: argparse.Namespace) -> str | None:
    """The checkpoint to use: ``--checkpoint``, else a run trained once into the cache."""
    if args.random_init:
        return None
    if args.checkpoint and Path(args.checkpoint).is_file():
        return str(args.checkpoint)
    from hessian_powerlaw.training import TrainConfig, train

    name = re.sub(r"[^A-Za-z0-9.-]+", "_", f"run-{args.model}-{args.data}")
    settings = "-".join(f"{k}{v}" for k, v in TRAIN_SETTINGS.items())
    folder = Path(args.cache_dir) / f"{name}-{settings}"
    if args.checkpoint:
        log(f"checkpoint {args.checkpoint} not found: training into {folder} instead")
    else:
        log(f"no --checkpoint: training (or reusing) {folder}")
    config = TrainConfig(model=args.model, data=args.data, **TRAIN_SETTINGS)
    limit_threads(args.threads)
    result = train(config, folder, progress=not args.quiet, resume=True)
    log(f"trained: test accuracy {result.test_accuracy:.4f}, checkpoint {folder / 'final.pt'}")
    return str(folder / "final.pt")


def build_problem(job: dict[str, Any]) -> tuple[Any, Any, list[Any]]:
    """(model, data bundle, Hessian batches) exactly as ``spectrum --samples N`` gets them."""
    from hessian_powerlaw import analysis, zoo

    data = zoo.load_data(job["data"], seed=0, model_spec=job["model"])
    model = analysis.load_model_state(job["model"], data, job["checkpoint"], 0)
    batches = data.hessian_batches(job["samples"], None, 0)
    return model, data, batches


# ----------------------------------------------------------------------------- peak memory


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return int(psutil.Process().memory_info().rss)


class PeakRSS:
    """The RSS high-water mark of this process inside the ``with`` block.

    Linux: ``VmHWM`` after writing 5 to ``/proc/self/clear_refs`` (resets it to the current
    RSS). Elsewhere, or where that write is refused: psutil sampling every 5 ms.
    """

    def __enter__(self) -> PeakRSS:
        self.start = _rss_bytes()
        self.how = "VmHWM"
        try:
            Path("/proc/self/clear_refs").write_text("5")
            if _status_kib("VmHWM") is None:
                raise OSError("no VmHWM")
        except OSError:
            self.how = "psutil sampling (5 ms)"
            self._peak = self.start
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.how == "VmHWM":
            self.peak = int(_status_kib("VmHWM") or 0) * 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._peak, _rss_bytes())


# ----------------------------------------------------------------------------- methods (children)


def run_method(job: dict[str, Any]) -> dict[str, Any]:
    """One method on a fresh operator, in a fresh process; returns plain data."""
    limit_threads(job["threads"])
    import torch

    from hessian_powerlaw.operators import HessianOperator

    model, data, batches = build_problem(job)
    method = job["method"]
    dtype = {"float32": torch.float32, "float64": torch.float64}[job["dtype"]]
    op = HessianOperator(model, data.loss, batches, dtype=dtype)
    out: dict[str, Any] = {"method": method, "dtype": job["dtype"], "n": op.n}
    if method == "tool":
        solve = _solve_tool
    elif method == "tool-reference":
        solve = _solve_tool_reference
    elif method == "arpack":
        solve = _solve_arpack
    else:
        solve = _peer_solver(op, job, model, batches, data)
    # one uncounted product first: the operator's one-off work (activation measurement,
    # tracing, allocator warm-up) would otherwise land on whichever method runs first
    start = time.perf_counter()
    solve.warmup(op) if hasattr(solve, "warmup") else _warmup(op)
    out["warmup_seconds"] = time.perf_counter() - start
    op.num_matvecs, op.seconds = 0, 0.0
    profiler = cProfile.Profile() if job.get("profile") else None
    with PeakRSS() as mem:
        start = time.perf_counter()
        if profiler is not None:
            result = profiler.runcall(solve, op, job)
        else:
            result = solve(op, job)
        seconds = time.perf_counter() - start
    out.update(result)
    out.update(
        seconds=seconds,
        rss_setup_bytes=mem.start,
        rss_peak_bytes=mem.peak,
        rss_how=mem.how,
    )
    out.setdefault("matvecs", int(op.num_matvecs))
    out.setdefault("product_seconds", float(op.seconds))
    if profiler is not None:
        out["profile"] = profile_report(profiler, job["profile_top"])
    return out


def _warmup(op: Any) -> None:
    import torch

    gen = torch.Generator().manual_seed(1)
    op.matmat(torch.randn(op.n, 1, dtype=op.dtype, generator=gen))


def _solve_tool(op: Any, job: dict[str, Any]) -> dict[str, Any]:
    from hessian_powerlaw.solvers import top_eigenpairs

    spec = top_eigenpairs(op, k=job["k"], progress=not job["quiet"], **job["solver_opts"])
    return {
        "values": np.asarray(spec.eigenvalues, dtype=float).tolist(),
        "residuals": np.asarray(spec.residuals, dtype=float).tolist(),
        "converged": int(spec.num_converged),
        "matvecs": int(spec.num_matvecs),
        "resumed_matvecs": int(spec.resumed_matvecs),
        "data_passes": spec.num_data_passes,
        "tol": float(spec.tol),
    }


def _solve_tool_reference(op: Any, job: dict[str, Any]) -> dict[str, Any]:
    """The tool's own float64 solve at ``--arpack-tol``, resumable from its state file."""
    from hessian_powerlaw.solvers import SolverCheckpoint

    state = SolverCheckpoint(job["state_path"], 300.0, {"reference": job["state_path"]})
    return _solve_tool(op, {**job, "solver_opts": {"tol": job["arpack_tol"], "checkpoint": state}})


def _solve_arpack(op: Any, job: dict[str, Any]) -> dict[str, Any]:
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    k, tol = job["k"], job["arpack_tol"]
    v0 = np.random.default_rng(0).standard_normal(op.n)
    note = None
    try:
        values = eigsh(op.to_scipy(), k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
        converged = k
    except ArpackNoConvergence as exc:  # report what converged, never hide it
        values, converged = exc.eigenvalues, len(exc.eigenvalues)
        note = str(exc)
    values = np.sort(np.asarray(values, dtype=float))[::-1]
    # ARPACK's criterion ||r|| <= tol |theta| as a residual relative to |lambda_1|
    residuals = tol * np.abs(values) / max(np.abs(values).max(), 1e-300)
    return {
        "values": values.tolist(),
        "residuals": residuals.tolist(),
        "converged": int(converged),
        "tol": tol,
        "note": note,
    }


def _peer_solver(op: Any, job: dict[str, Any], model: Any, batches: Any, data: Any) -> Any:
    """hessian-eigenthings' ``lanczos`` on its operator, which counts and times its columns."""
    import torch
    from hessian_eigenthings import HessianOperator as PeerHessian
    from hessian_eigenthings import LambdaOperator, lanczos, supervised_loss

    dtype = {"float32": torch.float32, "float64": torch.float64}[job["peer_dtype"]]
    if job["method"] == "eigenthings":
        # our operator (the same products as the other methods) behind the peer's interface
        peer_op = LambdaOperator(op.matvec, size=op.n, device=op.device, dtype=dtype)
        where = "adapter (LambdaOperator) on our HessianOperator"
    else:  # the peer's own double-backward Hessian-vector product on the same model and data
        model = model.to(dtype).eval()
        cast = [
            tuple(t.to(dtype) if t.is_floating_point() else t for t in batch) for batch in batches
        ]
        peer_op = PeerHessian(model, cast, supervised_loss(data.loss))
        where = "hessian_eigenthings.HessianOperator (autograd double backward)"
    matvec = peer_op.matvec
    counter = {"columns": 0, "seconds": 0.0}

    def counted(v: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = matvec(v)
        counter["seconds"] += time.perf_counter() - start
        counter["columns"] += 1
        return out

    peer_op.matvec = counted  # the instance attribute shadows the method lanczos calls

    def solve(_op: Any, job: dict[str, Any]) -> dict[str, Any]:
        counter["columns"], counter["seconds"] = 0, 0.0
        opts = {"seed": 0, **job["peer_opts"]}
        result = lanczos(peer_op, k=job["k"], **opts)
        values = result.eigenvalues.detach().double().cpu().numpy()
        residuals = result.residuals.detach().double().cpu().numpy()
        order = np.argsort(-values, kind="stable")
        values, residuals = values[order], residuals[order]
        scale = max(float(np.abs(values).max()), 1e-300)
        max_iter = opts.get("max_iter") or min(2 * job["k"], peer_op.size - 1)
        reorth = opts.get("reorthogonalize")
        return {
            "values": values.tolist(),
            "residuals": (residuals / scale).tolist(),  # its |beta s_last|, relative
            "converged": int(result.converged.sum()),  # what the peer itself claims
            "matvecs": counter["columns"],
            "product_seconds": counter["seconds"],
            "tol": float(opts.get("tol", 1e-4)),
            "iterations": int(result.iterations),
            "peer_settings": {
                "max_iter": int(max_iter),
                "reorthogonalize": bool(max_iter <= 50) if reorth is None else bool(reorth),
                "which": opts.get("which", "LM"),
                "tol": float(opts.get("tol", 1e-4)),
                "seed": opts["seed"],
                "operator": where,
                "dtype": job["peer_dtype"],
            },
        }

    def warmup(op: Any) -> None:
        gen = torch.Generator().manual_seed(1)
        peer_op.matvec(torch.randn(peer_op.size, dtype=dtype, generator=gen))

    solve.warmup = warmup  # type: ignore[attr-defined]
    return solve


def profile_report(profiler: cProfile.Profile, top: int) -> dict[str, Any]:
    """Top functions by cumulative time, and where the solve's time went."""
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("cumulative").print_stats(top)
    table: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]

    def cumulative(name: str, file_part: str, caller: str | None = None) -> float:
        total = 0.0
        for (file, _line, func), (_cc, _nc, _tt, ct, callers) in table.items():
            if func != name or file_part not in file:
                continue
            if caller is None:
                total += ct
            else:
                total += sum(c[3] for (_f, _l, fn), c in callers.items() if fn == caller)
        return total

    total = max((v[3] for v in table.values()), default=0.0)
    solver = "solvers/lanczos.py"
    parts = {
        "products (HessianOperator.matmat)": cumulative("matmat", "operators/base.py"),
        "orthogonalization (_orthogonalize, _next_block)": cumulative("_orthogonalize", solver)
        + cumulative("_next_block", solver),
        "Rayleigh-Ritz eigh (_ritz)": cumulative("_ritz", solver),
        "restarts, without their eigh (_restart)": cumulative("_restart", solver)
        - cumulative("_ritz", solver, caller="_restart"),
        "certification (_certify)": cumulative("_certify", solver),
        "residual estimates": cumulative("_estimated_residuals", solver),
    }
    parts["the rest (Python, assembling T, start block)"] = total - sum(parts.values())
    return {"total_seconds": total, "breakdown": parts, "top": stream.getvalue()}


def run_in_child(job: dict[str, Any]) -> dict[str, Any]:
    """``run_method(job)`` in a fresh spawned process (its own peak RSS, no shared state)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_method, job).result()


# ----------------------------------------------------------------------------- analysis


def fit_of(values: np.ndarray, residuals: np.ndarray, dtype: str, alpha: float) -> dict:
    """``fit_power_law`` as the ``spectrum`` command feeds it (resolved eigenvalues)."""
    import torch

    from hessian_powerlaw.analysis import fit_or_reason, resolved_eigenvalues

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    spectrum = SimpleNamespace(eigenvalues=values, residuals=residuals)
    fit, reason = fit_or_reason(resolved_eigenvalues(spectrum, torch_dtype), alpha)
    if fit is None:
        return {"s": None, "d_ks": None, "d_c": None, "is_power_law": None, "fit_error": reason}
    return {
        "s": float(fit.s),
        "sigma_s": float(fit.sigma_s),
        "d_ks": float(fit.ks_distance),
        "d_c": float(fit.critical_value),
        "is_power_law": bool(fit.is_power_law),
        "fit_k": int(fit.k),
        "fit_error": None,
    }


def errors_vs(values: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Rank-by-rank relative errors, ghosts, missed and negative values against the reference."""
    values = np.sort(np.asarray(values, dtype=float))[::-1]
    ref = np.asarray(reference, dtype=float)[: len(values)]
    rel = np.abs(values[: len(ref)] - ref) / np.maximum(np.abs(ref), 1e-300)
    worst = int(np.argmax(rel)) if rel.size else 0

    def close_pairs(x: np.ndarray) -> int:
        x = np.sort(x)
        gaps = np.diff(x) / np.maximum(np.abs(x[1:]), 1e-300)
        return int(np.count_nonzero(gaps < GHOST))

    # copies of one eigenvalue beyond those the reference itself has in the same range
    in_range = ref[(ref >= values.min()) & (ref <= values.max())] if values.size else ref
    ghosts = max(close_pairs(values) - close_pairs(in_range), 0)
    asc = np.sort(values)
    missed = 0
    for r in ref:
        j = np.searchsorted(asc, r)
        near = [asc[i] for i in (j - 1, j) if 0 <= i < len(asc)]
        if not near or min(abs(v - r) for v in near) > OFF * abs(r):
            missed += 1
    return {
        "max_rel_error": float(rel.max()) if rel.size else None,
        "worst_rank": worst + 1,
        "off_1e-3": int(np.count_nonzero(rel > OFF)),
        "first_off_rank": int(np.argmax(rel > OFF)) + 1 if np.any(rel > OFF) else None,
        "ghosts": ghosts,
        "missed": missed,
        "negatives": int(np.count_nonzero(values < 0)),
    }


def reference_path(args: argparse.Namespace, key: str, k: int) -> Path:
    if args.reference:
        return Path(args.reference)
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", f"ref-{args.model}-{args.data}-{key}")
    return Path(args.cache_dir) / f"{name}-n{args.samples}-k{k}-tol{args.arpack_tol:g}.npy"


def cached_reference(
    args: argparse.Namespace, key: str, k: int
) -> tuple[np.ndarray, str] | tuple[None, None]:
    """A cached reference with at least k values (a larger K's top k are as good), and
    the solver that made it (as its .json says; ARPACK for files written before that)."""
    if args.reference:
        path = Path(args.reference)
        if not path.is_file():
            return None, None
        values = np.load(path)
        if len(values) < k:
            raise SystemExit(f"--reference {path} holds {len(values)} eigenvalues, K = {k}")
        meta_path = path.with_suffix(".json")
        if meta_path.is_file():  # written beside it by save_reference: the same problem?
            meta = json.loads(meta_path.read_text())
            wanted = reference_meta(args, key, len(values))
            differ = sorted(f for f in wanted if f != "k" and meta.get(f) != wanted[f])
            if differ:
                raise SystemExit(
                    f"--reference {path} is for another problem ({', '.join(differ)} differ: "
                    f"{ {f: meta.get(f) for f in differ} } vs { {f: wanted[f] for f in differ} })"
                )
        return values[:k], _solver_of(path)
    folder = Path(args.cache_dir)
    stem = reference_path(args, key, k).name.split(f"-k{k}-")[0]
    candidates = []
    for path in folder.glob(f"{stem}-k*-tol{args.arpack_tol:g}.npy"):
        found = re.search(r"-k(\d+)-tol", path.name)
        if found and int(found.group(1)) >= k:
            candidates.append((int(found.group(1)), path))
    if not candidates:
        return None, None
    path = min(candidates)[1]
    return np.load(path)[:k], _solver_of(path)


def _solver_of(path: Path) -> str:
    meta = path.with_suffix(".json")
    return json.loads(meta.read_text()).get("solver", "ARPACK") if meta.is_file() else "ARPACK"


def reference_meta(args: argparse.Namespace, key: str, k: int) -> dict[str, Any]:
    return {
        "model": args.model,
        "data": args.data,
        "checkpoint_sha256_12": key,
        "samples": args.samples,
        "k": k,
        "arpack_tol": args.arpack_tol,
    }


def save_reference(
    args: argparse.Namespace, key: str, k: int, values: np.ndarray, solver: str = "ARPACK"
) -> Path:
    """The reference as .npy, with what it is the reference of in a .json beside it."""
    from hessian_powerlaw.io import atomic_write_bytes, atomic_write_json

    path = reference_path(args, key, k)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, dtype=np.float64))
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_json(path.with_suffix(".json"), {**reference_meta(args, key, k), "solver": solver})
    return path


# ----------------------------------------------------------------------------- output


def label(row: dict[str, Any]) -> str:
    """The method cell: what ran, with its thread count where it is not one (older rows
    without a count ran on one thread)."""
    threads = row.get("threads", 1)
    return _method(row) + (f", {threads} threads" if threads != 1 else "")


def _method(row: dict[str, Any]) -> str:
    if row["method"] == "tool":
        opts = ", ".join(f"{k}={v}" for k, v in row["solver_opts"].items())
        text = f"tool: top_eigenpairs ({row['dtype']}, tol {row['tol']:g}"
        text += f", {opts})" if opts else ", defaults)"
        return text + (" under cProfile" if row.get("profiled") else "")
    if row["method"] == "arpack":
        return f"ARPACK eigsh LA (float64, tol {row['tol']:g}) = reference"
    if row["method"] == "reference":
        return f"reference (cached, {row.get('solver', 'ARPACK')}, tol {row['tol']:g})"
    p = row["peer_settings"]
    where = "our operator" if row["method"] == "eigenthings" else "its own HVP"
    return (
        f"hessian-eigenthings lanczos ({where}, {p['dtype']}, max_iter {p['max_iter']}, "
        f"reorth {'on' if p['reorthogonalize'] else 'off'}, which {p['which']}, tol {p['tol']:g})"
    )


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_HEAD = (
    "| K | method | HVPs | wall s | in products | peak RSS MiB (set-up) | converged | "
    "HVPs / converged | max rel. error (rank) | off > 1e-3 | ghosts / missed | s | d_ks | d_c |"
)


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [TABLE_HEAD, "|" + "---|" * TABLE_HEAD.count(" | ") + "---|"]
    for r in rows:
        e = r.get("errors") or {}
        conv = r.get("converged")
        per = r["matvecs"] / conv if conv else None
        share = r["product_seconds"] / r["seconds"] if r.get("seconds") else None
        mem = (
            f"{r['rss_peak_bytes'] / 2**20:.0f} ({r['rss_setup_bytes'] / 2**20:.0f})"
            if r.get("rss_peak_bytes")
            else "-"
        )
        err = (
            f"{e['max_rel_error']:.1e} ({e['worst_rank']})"
            if e.get("max_rel_error") is not None
            else "-"
        )
        ghosts = f"{e['ghosts']} / {e['missed']}" if e else "-"
        if e.get("negatives"):
            ghosts += f", {e['negatives']} negative"
        conv_text = "-" if conv is None else f"{conv}/{r['k']}"
        lines.append(
            f"| {r['k']} | {label(r)} | {r.get('matvecs', '-')} | {fmt(r.get('seconds'), '.1f')} "
            f"| {fmt(share, '.0%')} | {mem} | {conv_text} | {fmt(per, '.2f')} | {err} "
            f"| {e.get('off_1e-3', '-')} | {ghosts} | {fmt(r['fit']['s'], '.4f')} "
            f"| {fmt(r['fit']['d_ks'], '.4f')} | {fmt(r['fit']['d_c'], '.4f')} |"
        )
    return lines


def docs_section(summary: dict[str, Any], lines: list[str]) -> str:
    s = summary
    checkpoint = s["checkpoint"] or "none (random initialisation, seed 0)"
    text = [
        DOCS_HEADING,
        "",
        "<!-- written by benchmarks/bench_paper_scale.py --write-docs; rerun to replace -->",
        "",
        "Commands (the rows of each are merged with `--merge`):"
        if len(s.get("commands", [])) > 1
        else "Command:",
        "",
        "```",
        *s.get("commands", [s["command"]]),
        "```",
        "",
        f"Problem: `{s['model']}` ({s['n']:,} parameters) on `{s['data']}`, checkpoint "
        f"`{checkpoint}` (sha256 {s['checkpoint_key']}), Hessian of the mean cross-entropy on "
        f"{s['samples']} training samples in one batch (`data.hessian_batches({s['samples']}, "
        "None, 0)`, as `hessian-powerlaw spectrum --samples` takes them). Each method ran in "
        "its own spawned process on a freshly built `HessianOperator`; peak RSS is that "
        "process's high-water mark during the solve "
        f"({s['rss_how']}), with the RSS after set-up in brackets. Tool defaults at run time: "
        f"dtype {s['tool_dtype']}, tol {s['tool_tol']:g}, solver options "
        f"{s['solver_opts'] or 'none'}. Errors are against the float64 reference, rank by "
        'rank: ARPACK (`eigsh(..., which="LA")`) or, where its row says so, the tool\'s own '
        "float64 solve, at the tolerance in its row; ghosts: extra "
        f"copies of one eigenvalue (relative gap < {GHOST:g}); missed: reference eigenvalues "
        "of the top K with no returned value within 1e-3. `converged` is what each method "
        "claims (the tool and ARPACK: certified residuals; hessian-eigenthings: its own "
        "Lanczos residual estimate). s, d_ks, d_c: `fit_power_law` of each method's "
        "eigenvalues after `resolved_eigenvalues`, as `spectrum` fits them.",
        "",
        f"Machine: {s['machine']}; {_threads_text(s)}; load average at start "
        f"{s['load_average']}. Run of {s['date']}.",
        "",
        *lines,
        "",
    ]
    if s.get("profile"):
        p = s["profile"]
        text += [
            f"Where the tool's solve went (cProfile, K = {p['k']}, "
            f"{p['total_seconds']:.1f} s in all):",
            "",
            "| part | seconds | share |",
            "|---|---|---|",
            *[
                f"| {name} | {sec:.1f} | {sec / max(p['total_seconds'], 1e-12):.0%} |"
                for name, sec in p["breakdown"].items()
            ],
            "",
        ]
    return "\n".join(text)


def _threads_text(summary: dict[str, Any]) -> str:
    counts = {r.get("threads", 1) for r in summary["rows"]} or {summary["threads"]}
    if len(counts) == 1:
        return f"{counts.pop()} torch/BLAS threads"
    return "torch/BLAS threads as the method says (one where it does not)"


def write_docs(path: Path, section: str) -> None:
    """Replace this benchmark's section of docs/benchmarks.md, or append it."""
    from hessian_powerlaw.io import atomic_write_text

    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    start = text.find(DOCS_HEADING)
    if start < 0:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        following = re.search(r"^## ", text[start + len(DOCS_HEADING) :], re.MULTILINE)
        end = start + len(DOCS_HEADING) + following.start() if following else len(text)
        rest = text[end:]
        new = text[:start] + section + ("\n" + rest if rest else "")
    atomic_write_text(path, new.rstrip("\n") + "\n")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="trained weights (default: train into --cache-dir)")
    parser.add_argument("--random-init", action="store_true", help="the seeded initialisation")
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--data", default="fashion-mnist:10000")
    parser.add_argument("--samples", type=int, default=1000, help="Hessian samples (one batch)")
    parser.add_argument("--k", default="300,1000", help="K values, comma-separated")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"from {', '.join(METHODS)}")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="the tool's operator")
    parser.add_argument("--solver-opts", help="extra top_eigenpairs kwargs: key=value,...")
    parser.add_argument("--arpack-tol", type=float, default=1e-6)
    parser.add_argument(
        "--reference-solver",
        choices=("arpack", "tool", "none"),
        default="arpack",
        help="what computes a missing reference: ARPACK (then also a row), or the tool's own "
        "float64 solve at --arpack-tol, which saves its state every 5 minutes in --cache-dir "
        "and resumes from it when rerun (for K where ARPACK takes hours); none: no "
        "reference, rows without errors (a later --render with the reference cannot add them)",
    )
    parser.add_argument("--peer-dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--peer-opts", help="hessian_eigenthings.lanczos kwargs: key=value,...")
    parser.add_argument("--reference", help="reference eigenvalues .npy (read, or written)")
    parser.add_argument(
        "--cache-dir",
        default=str(
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            / "hessian-powerlaw"
            / "bench_paper_scale"
        ),
        help="trained run and cached reference eigenvalues",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--profile", action="store_true", help="run the tool under cProfile")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of --json's earlier runs (other K or methods) beside this run's; "
        "a row of the same K and method is replaced. The table and docs show them all",
    )
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--render",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="run nothing: merge the rows of these earlier --json files (later ones replace "
        "rows of the same K and method), print the table, and with --write-docs / --json "
        "write it; for runs made in parallel (e.g. ARPACK on one core, the rest on another)",
    )
    args = parser.parse_args(argv)
    if args.render:
        summary = merge_summaries([json.loads(path.read_text()) for path in args.render])
        return finish(args, summary)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        parser.error(f"--methods: choose one or more of {', '.join(METHODS)}, got {methods}")
    if any(m.startswith("eigenthings") for m in methods):
        from importlib.metadata import PackageNotFoundError, version

        try:
            peer_version = version("hessian-eigenthings")
        except PackageNotFoundError:
            parser.error(
                "hessian-eigenthings is not installed: .venv/bin/pip install --no-deps "
                "hessian-eigenthings==1.0.0a5 (its requirements numpy, scipy, torch, tqdm are "
                "ours), or leave eigenthings out of --methods"
            )
        if peer_version != "1.0.0a5":
            log(f"note: hessian-eigenthings {peer_version}, not the 1.0.0a5 this was written for")
    ks = sorted({int(k) for k in args.k.split(",")})
    solver_opts, peer_opts = parse_opts(args.solver_opts), parse_opts(args.peer_opts)
    # children start with these; torch and threadpoolctl then set the same limits
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    from hessian_powerlaw.solvers import default_tol

    tool_dtype = args.dtype or tool_default_dtype()
    import torch

    tool_tol = solver_opts.get("tol") or default_tol(getattr(torch, tool_dtype))
    checkpoint = ensure_checkpoint(args)
    key = file_key(checkpoint)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    log(
        f"{args.model} on {args.data}, {args.samples} samples, checkpoint {checkpoint} "
        f"({key}), K = {ks}, methods {methods}, tool dtype {tool_dtype} (tol {tool_tol:g}), "
        f"{args.threads} threads, load average {load}"
    )

    base = {
        "model": args.model,
        "data": args.data,
        "checkpoint": checkpoint,
        "samples": args.samples,
        "threads": args.threads,
        "quiet": args.quiet,
        "solver_opts": solver_opts,
        "peer_opts": peer_opts,
        "peer_dtype": args.peer_dtype,
        "arpack_tol": args.arpack_tol,
        "profile_top": args.profile_top,
    }
    rows: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    n = None
    rss_how = None
    for k in ks:
        results: dict[str, dict[str, Any]] = {}
        order = ["arpack"] + [m for m in methods if m != "arpack"]  # reference first
        reference, ref_solver = (
            (None, None) if "arpack" in methods else cached_reference(args, key, k)
        )
        if reference is None and "arpack" not in methods:
            if args.reference_solver == "tool":
                reference, ref_solver = tool_reference(args, base, key, k), TOOL_REFERENCE
            elif args.reference_solver == "none":
                log(f"K = {k}: no reference (--reference-solver none): rows without errors")
            else:
                log(f"K = {k}: no cached reference; running ARPACK for it (reported as arpack)")
        if reference is not None or (args.reference_solver == "none" and "arpack" not in methods):
            order.remove("arpack")
        for method in order:
            dtype = {"tool": tool_dtype, "arpack": "float64"}.get(method, args.peer_dtype)
            job = {**base, "method": method, "k": k, "dtype": dtype}
            job["profile"] = args.profile and method == "tool"
            log(f"K = {k}: {method} ({dtype}) ...")
            result = run_in_child(job)
            log(
                f"K = {k}: {method}: {result['matvecs']} HVPs, {result['seconds']:.1f} s, "
                f"peak RSS {result['rss_peak_bytes'] / 2**20:.0f} MiB"
            )
            results[method] = result
            n, rss_how = result["n"], result["rss_how"]
            if method == "arpack":
                reference = np.asarray(result["values"])
                if result["converged"] == k:
                    path = save_reference(args, key, k, reference)
                    log(f"reference eigenvalues saved to {path}")
        if reference is not None and "arpack" not in results:
            rows.append(
                {
                    "k": k,
                    "method": "reference",
                    "solver": ref_solver,
                    "tol": args.arpack_tol,
                    "matvecs": "-",
                    "product_seconds": 0.0,
                    "fit": fit_of(reference, np.zeros_like(reference), "float64", args.alpha),
                }
            )
        for method in ["tool", "arpack", "eigenthings", "eigenthings-native"]:
            if method not in results:
                continue
            r = results[method]
            values = np.asarray(r.pop("values"))
            residuals = np.asarray(r.pop("residuals"))
            row = {"k": k, **r, "solver_opts": solver_opts, "profiled": bool(r.get("profile"))}
            row["threads"] = args.threads
            row["errors"] = None if reference is None else errors_vs(values, reference)
            row["fit"] = fit_of(values, residuals, r["dtype"], args.alpha)
            row["lambda_1"], row["lambda_k"] = float(values.max()), float(np.sort(values)[0])
            if r.get("profile"):
                profile = {"k": k, **row.pop("profile")}
            rows.append(row)

    command = ".venv/bin/python benchmarks/bench_paper_scale.py " + shlex.join(argv)
    summary = {
        "command": command.strip(),
        "commands": [command.strip()],
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "load_average": load,
        "model": args.model,
        "data": args.data,
        "n": n,
        "samples": args.samples,
        "checkpoint": checkpoint,
        "checkpoint_key": key,
        "threads": args.threads,
        "tool_dtype": tool_dtype,
        "tool_tol": tool_tol,
        "solver_opts": solver_opts,
        "peer_opts": peer_opts,
        "arpack_tol": args.arpack_tol,
        "rss_how": rss_how,
        "rows": rows,
        "profile": profile,
        "versions": _versions(),
    }
    if args.merge and args.json and args.json.is_file():
        summary = merge_summaries([json.loads(args.json.read_text()), summary])
    return finish(args, summary)


TOOL_REFERENCE = "the tool (float64)"


def tool_reference(args: argparse.Namespace, base: dict[str, Any], key: str, k: int) -> np.ndarray:
    """The reference from the tool's own float64 solve (resumed from its state), saved."""
    state = reference_path(args, key, k).with_suffix(".state.pt")
    log(f"K = {k}: no cached reference; the tool's float64 solve makes it ({state})")
    job = {**base, "method": "tool-reference", "k": k, "dtype": "float64"}
    result = run_in_child({**job, "state_path": str(state), "profile": False})
    if result["converged"] < k:
        raise SystemExit(f"K = {k}: the reference solve left pairs unconverged")
    reference = np.asarray(result["values"])
    path = save_reference(args, key, k, reference, TOOL_REFERENCE)
    log(
        f"reference eigenvalues saved to {path} ({result['matvecs']} HVPs, "
        f"{result['resumed_matvecs']} of them resumed, {result['seconds']:.0f} s)"
    )
    return reference


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary from several runs: the last one's settings, every run's rows and command.

    A row of the same K and method (label) in a later run replaces the earlier one.
    """
    rows: list[dict[str, Any]] = []
    commands: list[str] = []
    for summary in summaries:
        now = {(r["k"], label(r)) for r in summary["rows"]}
        rows = [r for r in rows if (r["k"], label(r)) not in now] + summary["rows"]
        commands += [c for c in summary.get("commands", [summary["command"]]) if c not in commands]
    merged = dict(summaries[-1])
    # by K, each K's cached reference first; otherwise (stable) in the runs' order
    merged["rows"] = sorted(rows, key=lambda r: (r["k"], r["method"] != "reference"))
    merged["commands"] = commands
    merged["profile"] = next((s["profile"] for s in summaries[::-1] if s.get("profile")), None)
    return merged


def finish(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    """Print the table (and the profile), write the JSON and the docs section if asked."""
    lines = table_lines(summary["rows"])
    print("\n".join(["", *lines]))
    profile = summary.get("profile")
    if profile is not None:
        print(f"\nTool's solve under cProfile (K = {profile['k']}):")
        for name, seconds in profile["breakdown"].items():
            share = seconds / max(profile["total_seconds"], 1e-12)
            print(f"  {name:50s} {seconds:8.1f} s  {share:4.0%}")
        print(profile["top"])
    if args.json:
        from hessian_powerlaw.io import atomic_write_json

        atomic_write_json(args.json, summary)
        log(f"wrote {args.json}")
    if args.write_docs:
        write_docs(args.docs, docs_section(summary, lines))
        log(f"updated {args.docs}")
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hessian-powerlaw", "torch", "numpy", "scipy", "hessian-eigenthings"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


if __name__ == "__main__":
    raise SystemExit(main())
