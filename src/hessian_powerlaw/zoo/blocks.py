"""Parameter groups of transformer-style models: per-block groups and the LM head.

``per_block_groups(model)`` splits a model's trainable parameters into the groups of the
paper's layer-wise spectra:

    "embeddings"    parameters registered before the first repeated block
    "<blocks>.<i>"  the parameters of the i-th repeated block, labelled with the model's own
                    name of that block: ``blocks.3`` in chargpt, ``transformer.h.3`` in GPT-2,
                    ``model.layers.3`` in LLaMA-style models (so ``--params 'transformer.h.3.*'``
                    selects the same group)
    "head"          parameters registered after the last block (final norm, LM head)

The repeated blocks are the children of the container (``nn.ModuleList`` or
``nn.Sequential``) with at least two children, all of one class, that holds the most
parameters; the outermost such container wins a tie, so a list of attention heads inside
each block is never mistaken for the list of blocks. This finds ``blocks`` in chargpt,
``transformer.h`` in GPT-2 and ``model.layers`` in LLaMA-style models.

Shared (tied) parameters appear once, under their first name, as in
``model.named_parameters()``: in a GPT-2 with tied embeddings the LM head's matrix is
``transformer.wte.weight`` and belongs to "embeddings".

``last_layer_names(model)`` names the parameters of the LM head: the module returned by
``model.get_output_embeddings()`` when the model has one (chargpt and Hugging Face models),
otherwise the last module, in registration order, that owns parameters. With tied weights the
LM head's matrix is the shared embedding matrix, reported under its first name; its Hessian
then includes the curvature of both the input and output use of that matrix, because it is
one parameter of the loss.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from hessian_powerlaw.errors import UserInputError


def _containers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Candidate block containers: ModuleList/Sequential with >= 2 children of one class."""
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(module.children())
        if len(children) >= 2 and len({type(c) for c in children}) == 1:
            yield name, module


def _trainable_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def find_blocks(model: nn.Module) -> tuple[str, list[nn.Module]]:
    """(qualified name, children) of the container of repeated blocks; UserInputError if none."""
    best: tuple[int, int, str, nn.Module] | None = None
    for name, module in _containers(model):
        size, depth = _trainable_count(module), name.count(".") if name else -1
        # most parameters first, then the shallowest (outermost) container
        if size > 0 and (best is None or (size, -depth) > (best[0], -best[1])):
            best = (size, depth, name, module)
    if best is None:
        owners = [name for name, child in model.named_children() if _trainable_count(child)]
        example = f"'{owners[0]}.*'" if owners else "'last'"
        raise UserInputError(
            f"per-block parameter groups need a model with at least two repeated blocks (an "
            f"nn.ModuleList or nn.Sequential of identical layers); {type(model).__name__} has "
            f"none. Select parameters by name patterns instead, e.g. --params {example} (its "
            f"modules: {', '.join(owners) or 'none with parameters'})"
        )
    return best[2], list(best[3].children())


def per_block_groups(model: nn.Module) -> dict[str, list[str]]:
    """The model's trainable parameters by block.

    Ordered ``{"embeddings": [...], "<blocks>.0": [...], ..., "head": [...]}`` of trainable
    parameter names, each block labelled by its name in ``model`` (``transformer.h.0``);
    together the groups partition ``model``'s trainable parameters exactly. Groups that would
    be empty (e.g. no parameters before the blocks) are left out.
    """
    container, blocks = find_blocks(model)
    block_of = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
    before: list[str] = []
    inside: list[list[str]] = [[] for _ in blocks]
    after: list[str] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        index = block_of.get(id(param))
        if index is not None:
            inside[index].append(name)
        elif not any(inside):
            before.append(name)
        else:
            after.append(name)
    groups: dict[str, list[str]] = {}
    if before:
        groups["embeddings"] = before
    for i, names in enumerate(inside):
        if names:
            groups[f"{container}.{i}" if container else str(i)] = names
    if after:
        groups["head"] = after
    return groups


def _names_of(model: nn.Module, module: nn.Module) -> list[str]:
    """Names (as in ``model.named_parameters()``) of ``module``'s trainable parameters."""
    wanted = {id(p) for p in module.parameters() if p.requires_grad}
    return [name for name, p in model.named_parameters() if id(p) in wanted]


def last_layer_names(model: nn.Module) -> list[str]:
    """Names of the LM head's trainable parameters (see the module docstring)."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if isinstance(head, nn.Module):
        names = _names_of(model, head)
        if names:
            return names
    owners = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(False))]
    if not owners:
        raise UserInputError(f"{type(model).__name__} has no trainable parameters")
    return _names_of(model, owners[-1])
