"""The hf format's mapping of slimcore's weights onto Llama's names (its loading by
transformers is tests/test_hf_export.py)."""

import dataclasses

import pytest
import torch
from slimcore import UserError
from slimcore.config.schema import ModelSection
from slimcore.model.gpt import GPT
from slimcore.model.ops import TorchOps
from slimcore_checkpointers.hf_export import Shape, llama_weights

CFG = ModelSection(width=16, layers=2, heads=2, mlp_hidden=24, seq_len=8)


def state():
    torch.manual_seed(0)
    return GPT(CFG, 50, TorchOps).state_dict()


def test_fused_projections_are_split_in_llamas_order():
    weights = state()
    llama = llama_weights(weights, Shape.of(dataclasses.asdict(CFG)))
    assert len(llama) == 3 + 9 * CFG.layers  # q, k, v and gate, up apart
    qkv = weights["blocks.1.attn.qkv.weight"]
    torch.testing.assert_close(torch.cat([llama[f"model.layers.1.self_attn.{p}_proj.weight"]
                                          for p in "qkv"]), qkv, rtol=0, atol=0)
    gate_up = weights["blocks.0.mlp.gate_up.weight"]
    assert torch.equal(llama["model.layers.0.mlp.gate_proj.weight"], gate_up[:CFG.mlp_hidden])
    assert torch.equal(llama["model.layers.0.mlp.up_proj.weight"], gate_up[CFG.mlp_hidden:])


def test_a_model_of_another_shape_is_one_clear_error():
    weights = state()
    weights["blocks.0.attn.bias"] = torch.zeros(3)
    del weights["norm.weight"]
    with pytest.raises(UserError, match="not slimcore's 2-layer GPT .2 tensors differ"):
        llama_weights(weights, Shape.of(dataclasses.asdict(CFG)))
