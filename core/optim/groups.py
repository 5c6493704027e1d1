"""Which parameter takes which rule, stated once: every trainable parameter of the model is a
hidden matrix, an outer matrix (embedding, output layer) or a gain, in the model's order.

    groups = parameter_groups(model)
    groups.of(MATRIX)            the tensors Muon orthogonalises
    groups.of(MATRIX, EMBEDDING) the tensors AdamW decays (gains never are)
"""

from __future__ import annotations

import torch

from ..contracts.optimizer import EMBEDDING, GAIN, MATRIX, Parameter, ParameterGroups


def parameter_groups(model: torch.nn.Module) -> ParameterGroups:
    """The model's kinds of parameter: 1-D ones are gains; of the 2-D ones, those the model
    names in `OUTER_MATRICES` are embeddings and the rest hidden matrices, fused ones with
    the number of parts `FUSED_MATRICES` gives their name's ending (and their rows, from the
    model's `fused_rows(name)` where it has one). A tensor of more than
    two dimensions (none in the GPT) goes with the embeddings: no rule for matrices fits it."""
    outer = getattr(model, "OUTER_MATRICES", ())
    fused = getattr(model, "FUSED_MATRICES", {})
    described = []
    for name, tensor in model.named_parameters():
        if not tensor.requires_grad:
            continue
        if tensor.dim() < 2:
            described.append(Parameter(name, tensor, GAIN))
        elif name in outer or tensor.dim() > 2:
            described.append(Parameter(name, tensor, EMBEDDING))
        else:
            parts = next((n for ending, n in fused.items() if name.endswith(ending)), 1)
            rows = tuple(model.fused_rows(name)) if parts > 1 and hasattr(model, "fused_rows") \
                else ()
            described.append(Parameter(name, tensor, MATRIX, parts, rows))
    return ParameterGroups(tuple(described))
