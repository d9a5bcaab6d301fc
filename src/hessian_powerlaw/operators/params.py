"""Which parameters a Hessian is taken over: name patterns, tensors or ``"last"``.

Every parameter goes by the name ``model.named_parameters()`` gives it, in messages too
(:func:`summarize_names` keeps a big model's list readable).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor, nn

from hessian_powerlaw.errors import UserInputError

__all__ = ["abbreviate", "select_params", "summarize_names"]


def abbreviate(names: Sequence[str], limit: int = 12) -> str:
    """``a, b, c, ... (N more)`` so that error messages stay one readable line."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names) - limit} more)"


def _last_module_params(model: nn.Module) -> list[str]:
    """Names of the parameters owned directly by the last module that owns any.

    Matched by identity against ``model.named_parameters()``, so a weight tied to an earlier
    module (a language model's head sharing the embedding matrix) is found under the name
    that ``named_parameters`` lists it by.
    """
    last: list[nn.Parameter] = []
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            last = own
    wanted = {id(p) for p in last}
    return [name for name, p in model.named_parameters() if id(p) in wanted]


def select_params(model: nn.Module, params: Any) -> list[str]:
    """Selected parameter names, in ``model.named_parameters()`` order, without duplicates."""
    named = list(model.named_parameters())
    available = [name for name, _ in named]
    if params is None:
        chosen = {name for name, p in named if p.requires_grad}
        if not chosen:
            raise UserInputError("the model has no trainable parameters (requires_grad=True)")
    elif isinstance(params, str) or (
        isinstance(params, Sequence) and params and all(isinstance(p, str) for p in params)
    ):
        chosen = _match_patterns(model, [params] if isinstance(params, str) else list(params))
    elif isinstance(params, Iterable):
        tensors = list(params)
        if not tensors or not all(isinstance(t, Tensor) for t in tensors):
            raise UserInputError(
                "params must be None, name patterns (e.g. 'fc2.*', 'last') or a non-empty "
                "list of the model's parameter tensors"
            )
        by_id = {id(p): name for name, p in named}
        missing = [i for i, t in enumerate(tensors) if id(t) not in by_id]
        if missing:
            raise UserInputError(
                f"params[{missing[0]}] is not a parameter of the model; pass tensors from "
                "model.parameters() or name patterns"
            )
        chosen = {by_id[id(t)] for t in tensors}
    else:
        raise UserInputError(
            f"params must be None, a pattern string, or a list; got {type(params).__name__}"
        )
    return [name for name in available if name in chosen]


def _match_patterns(model: nn.Module, patterns: list[str]) -> set[str]:
    available = [name for name, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern == "last":
            hits = _last_module_params(model)
        else:
            hits = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise UserInputError(_no_match_message(pattern, available))
        chosen.update(hits)
    return chosen


def _no_match_message(pattern: str, available: Sequence[str]) -> str:
    """One line: the pattern, the model's own names (summarised), and an example glob."""
    hint = ""
    # hf:PATH models were once named with a "model." prefix; say what the pattern is now
    if pattern.startswith("model."):
        bare = pattern[len("model.") :]
        if any(fnmatch.fnmatchcase(name, bare) for name in available):
            hint = f"; parameters go by the model's own names now: did you mean {bare!r}?"
    if not hint:
        owner = available[-1].rpartition(".")[0] if available else ""
        example = f"{owner}.*" if owner else "*"
        hint = f" (fnmatch globs such as {example!r}, or 'last')"
    return (
        f"params pattern {pattern!r} matches no parameter; the model's parameters: "
        f"{summarize_names(available)}{hint}"
    )


def summarize_names(names: Sequence[str], limit: int = 16) -> str:
    """Parameter names for a message, short even for big models.

    Up to ``limit`` names are listed as they are. Beyond that, names that differ only in their
    numeric components (the blocks of a transformer) are collapsed into one, with each index
    set in braces: ``transformer.h.{0-11}.attn.c_attn.weight`` stands for 12 names. A group is
    collapsed only when it holds every combination of its indices, so the summary never names
    a parameter that does not exist. At most ``limit`` entries are shown, then how many more
    there are.
    """
    if len(names) <= limit:
        return ", ".join(names)
    groups: dict[tuple[str, ...], list[tuple[int, ...]]] = {}
    for name in names:
        parts = name.split(".")
        key = tuple("#" if part.isdigit() else part for part in parts)
        groups.setdefault(key, []).append(tuple(int(p) for p in parts if p.isdigit()))
    entries: list[str] = []
    for key, indices in groups.items():
        columns = [sorted(set(column)) for column in zip(*indices)]
        if len(indices) > 1 and len(set(indices)) == math.prod(len(c) for c in columns):
            ranges = iter(_index_set(column) for column in columns)
            entries.append(".".join(next(ranges) if part == "#" else part for part in key))
        else:
            for combo in indices:
                numbers = iter(str(i) for i in combo)
                entries.append(".".join(next(numbers) if part == "#" else part for part in key))
    return abbreviate(entries, limit)


def _index_set(values: Sequence[int]) -> str:
    """``{0-11}`` for a contiguous run, ``{0,2,5}`` otherwise; a single index as is."""
    if len(values) == 1:
        return str(values[0])
    if values[-1] - values[0] + 1 == len(values):
        return f"{{{values[0]}-{values[-1]}}}"
    return "{" + ",".join(str(v) for v in values) + "}"
