"""``hessian-powerlaw train``: train a zoo model on a dataset into a resumable run folder."""

from __future__ import annotations

import argparse
from typing import Any

from hessian_powerlaw.cli._common import (
    add_command,
    add_json,
    add_quiet,
    add_seq_len,
    print_json,
)
from hessian_powerlaw.errors import UserInputError

HELP = "train a model on a dataset, with checkpoints, into a resumable run folder"

EXAMPLES = """\
  hessian-powerlaw train --model lenet --data digits --epochs 30 --out runs/lenet-digits
  hessian-powerlaw train --model fcn:2x100 --data fashion-mnist:10000 --epochs 5 \\
      --checkpoint-epochs 0,1,5 --out runs/fcn
  hessian-powerlaw train --model lenet --data digits --label-noise 0.4 --out runs/noisy
  hessian-powerlaw train --model chargpt:4x128 --data shakespeare --optimizer adamw \\
      --lr 6e-4 --steps 1000 --schedule cosine --warmup-steps 100 --grad-clip 1 \\
      --checkpoint-every 100 --eval-every 100 --eval-batches 20 --out runs/gpt
A run folder that already holds the same run resumes from its last checkpoint."""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers such as 0,5,10, got {text!r}"
        ) from None
    return values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train``."""
    from hessian_powerlaw.zoo import DATA_SPECS, MODEL_SPECS  # plain strings, no torch

    p = add_command(subparsers, "train", HELP, EXAMPLES, run)
    p.add_argument("--model", required=True, help=f"model spec: {MODEL_SPECS}")
    p.add_argument("--data", required=True, help=f"data spec: {DATA_SPECS}")
    p.add_argument(
        "--data-dir", help="folder holding the dataset files (e.g. Fashion-MNIST or MNIST)"
    )
    add_seq_len(p)
    p.add_argument("--out", required=True, help="run folder (created; resumed if it holds a run)")
    p.add_argument(
        "--optimizer",
        default="sgd-momentum",
        help="sgd, sgd-momentum, adam, adamw, amsgrad, radam, adagrad, rmsprop or any "
        "torch.optim class name",
    )
    p.add_argument(
        "--lr", type=float, default=None, help="learning rate (default 0.1 for sgd, 1e-3 else)"
    )
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum of sgd-momentum")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="epochs to train (default 50)")
    length.add_argument("--steps", type=int, help="optimizer updates to train instead of epochs")
    p.add_argument(
        "--schedule",
        choices=("step", "constant", "cosine"),
        default="step",
        help="learning-rate schedule; step divides by 10 at 40%% and 80%% of training",
    )
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up updates")
    p.add_argument("--grad-clip", type=float, default=None, help="max gradient norm")
    ckpt = p.add_mutually_exclusive_group()
    ckpt.add_argument(
        "--checkpoint-epochs",
        type=_int_list,
        default=(),
        help="save checkpoints after these epochs, e.g. 0,5,10 (0 = initial weights)",
    )
    ckpt.add_argument("--checkpoint-every", type=int, help="save a checkpoint every N steps")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (default: each epoch)")
    p.add_argument("--eval-batches", type=int, help="cap on batches per evaluation")
    p.add_argument("--label-noise", type=float, default=0.0, help="symmetric label noise rate")
    p.add_argument("--random-labels", action="store_true", help="permute the training labels")
    p.add_argument("--gaussian-inputs", action="store_true", help="replace images by N(0, 1) noise")
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and batch order")
    p.add_argument(
        "--restart", action="store_true", help="discard a run already in --out and start over"
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice); 1 is fastest for small models on "
        "a busy machine. Bit-identical reruns need the same thread count",
    )
    add_quiet(p)
    add_json(p)
    p.set_defaults(resume_hint=resume_hint)
    return p


def resume_hint(args: argparse.Namespace) -> str:
    """What an interrupted ``train`` leaves: every checkpoint it finished (training.py)."""
    where = f"the last checkpoint in {args.out} (from the start when there is none)"
    if args.restart:
        return f"rerun without --restart to resume from {where}"
    return f"rerunning the same command resumes from {where}"


def run(args: argparse.Namespace) -> int:
    """Run ``train``; returns the exit status."""
    from hessian_powerlaw.training import TrainConfig, train

    if args.checkpoint_every is not None and args.checkpoint_epochs:
        raise UserInputError("give --checkpoint-epochs or --checkpoint-every, not both")
    if args.threads is not None:
        if args.threads < 1:
            raise UserInputError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    config = TrainConfig(
        model=args.model,
        data=args.data,
        data_dir=args.data_dir,
        seq_len=args.seq_len,
        label_noise=args.label_noise,
        random_labels=args.random_labels,
        gaussian_inputs=args.gaussian_inputs,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps=args.steps,
        schedule=args.schedule,
        warmup_steps=args.warmup_steps,
        grad_clip=args.grad_clip,
        checkpoint_epochs=tuple(args.checkpoint_epochs),
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        seed=args.seed,
    )
    result = train(config, args.out, progress=not args.quiet, resume=not args.restart)
    if args.json:
        print_json(result)
        return 0
    m = result.final_metrics
    resumed = ""
    if result.resumed_from_step == result.steps:
        resumed = " (already finished)"
    elif result.resumed_from_step is not None:
        resumed = f", resumed from step {result.resumed_from_step}"
    print(
        f"{config.model} on {config.data}: {result.steps} steps ({result.epochs:.3g} "
        f"epoch{'s' * (result.epochs != 1)}), "
        f"test accuracy {m['test_accuracy']:.4f}, test loss {m['test_loss']:.4f}, "
        f"train accuracy {m['train_accuracy']:.4f}, {result.seconds:.1f} s{resumed} "
        f"-> {result.out}"
    )
    return 0
