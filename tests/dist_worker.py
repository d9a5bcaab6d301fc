"""One rank of a data-parallel Hessian run, launched by tests/test_distributed.py via torchrun.

    torchrun --standalone --nproc_per_node=2 tests/dist_worker.py --case mlp chargpt --out R.json

Every rank builds the same model and the same full list of Hessian batches; the operator
keeps this rank's slice of each batch (``distributed.shard``) and all-reduces its products.
Rank 0 writes ``--out``, for each case: the eigenvalues, residuals and power-law fit, the
operator's global sample count and every rank's local sample count. The test compares them with
:func:`compute` run in a single process on the same :func:`build`.

Failure injection for the tests: ``--fail-rank R`` makes rank R raise after building its
operator, before its first product; ``--mismatch-rank R`` gives rank R one sample fewer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for ``tests.reference``

from hessian_powerlaw import distributed  # noqa: E402

CASES = ("mlp", "chargpt")
# Top eigenpairs compared between the runs, and the solver tolerance.
K = {"mlp": 30, "chargpt": 20}
TOL = 1e-8


def build(case: str, samples_delta: int = 0) -> tuple[torch.nn.Module, Any, list[Any], Any]:
    """(model, loss, batches, params) in float64, identical in every process.

    ``mlp``: the 64-16-10 tanh MLP of tests.reference on 300 digits in 3 batches of 100.
    ``chargpt``: chargpt:1x16 on 8 Shakespeare windows of 16 characters in 2 batches of 4,
    with the Hessian over the attention parameters of its block (``blocks.0.attn.*``).
    """
    if case == "mlp":
        from tests.reference import digits_mlp

        model, loss, batches = digits_mlp(
            hidden=16, seed=0, n_samples=300 + samples_delta, num_batches=3
        )
        return model, loss, batches, None
    if case == "chargpt":
        from hessian_powerlaw import zoo
        from hessian_powerlaw.zoo.text import load_text_data

        data = load_text_data("shakespeare", model_spec="chargpt:1x16", seq_len=16)
        model = zoo.build_model("chargpt:1x16", data, seed=0).to(torch.float64)
        batches = data.hessian_batches(num_samples=8 + samples_delta, batch_size=4, seed=0)
        return model, data.loss, batches, "blocks.0.attn.*"
    raise ValueError(f"case must be one of {CASES}, got {case!r}")


def compute(case: str, op: Any) -> dict[str, Any]:
    """Top-K eigenpairs of ``op`` and the power-law fit of their eigenvalues."""
    from hessian_powerlaw import fit_power_law, top_eigenpairs

    spec = top_eigenpairs(op, k=K[case], tol=TOL, seed=0)
    fit = fit_power_law(spec.eigenvalues)
    return {
        "eigenvalues": spec.eigenvalues.tolist(),
        "residuals": spec.residuals.tolist(),
        "converged": spec.converged.tolist(),
        "fit": fit.to_dict(),
    }


def operator(model: torch.nn.Module, loss: Any, batches: list[Any], params: Any) -> Any:
    from hessian_powerlaw import HessianOperator

    return HessianOperator(model, loss, batches, params=params, dtype=torch.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=CASES, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fail-rank", type=int, default=None)
    parser.add_argument("--mismatch-rank", type=int, default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    distributed.init_from_env(timeout=60)
    try:
        with distributed.failure_guard():
            status = _run(args)
            distributed.shutdown(synchronize=True)
            return status
    except distributed.DistributedError as exc:
        return distributed.report_peer_failure(exc)
    except distributed.InconsistentRanksError as exc:
        print(f"dist_worker: error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        distributed.shutdown()


def _run(args: argparse.Namespace) -> int:
    results = {case: _run_case(case, args) for case in args.case}
    if distributed.is_primary():
        from hessian_powerlaw.io import atomic_write_json

        atomic_write_json(args.out, results)
    return 0


def _run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    me = distributed.rank()
    delta = -1 if args.mismatch_rank == me else 0
    model, loss, batches, params = build(case, samples_delta=delta)
    op = operator(model, loss, batches, params)
    if args.fail_rank == me:
        raise RuntimeError(f"injected failure on rank {me}, before its first product")
    result = compute(case, op)
    local = int(sum(op._local_counts))
    gathered: list[Any] = [None] * distributed.world_size()
    torch.distributed.all_gather_object(gathered, local)
    result.update(num_samples=op.num_samples, local_samples=gathered, world_size=len(gathered))
    return result


if __name__ == "__main__":
    raise SystemExit(main())
