"""A Hugging Face Llama folder's safetensors into slimcore's GPT, one tensor at a time: each
read from the memory-mapped file, converted to the parameter's dtype as it is copied, and
its pages released, so the host holds the model and about one tensor of the file at once.
Under FSDP each rank keeps only its rows of each parameter.

    load_llama_weights(model, folder_path)

Llama's separate q, k, v (and gate, up) projections fill the rows of slimcore's fused ones.
"""

from __future__ import annotations

import json
from pathlib import Path
import torch

from ..contracts.errors import UserError
from ..storage.safetensors import SafetensorsFile

# Tensors some files carry that are no weights (rotary tables of old checkpoints).
NOT_WEIGHTS = ("rotary_emb.inv_freq",)
MAX_INDEX_BYTES = 64 * 2**20


def llama_sources(model) -> dict[str, list[str]]:
    """{slimcore parameter: the Llama tensors that fill its rows, in order}."""
    sources = {"embed.weight": ["model.embed_tokens.weight"],
               "norm.weight": ["model.norm.weight"]}
    if not model.cfg.tie_embeddings:
        sources["head.weight"] = ["lm_head.weight"]
    for i in range(len(model.blocks)):
        llama = f"model.layers.{i}."
        sources.update({
            f"blocks.{i}.attn_norm.weight": [llama + "input_layernorm.weight"],
            f"blocks.{i}.attn.qkv.weight": [llama + f"self_attn.{p}_proj.weight" for p in "qkv"],
            f"blocks.{i}.attn.out.weight": [llama + "self_attn.o_proj.weight"],
            f"blocks.{i}.mlp_norm.weight": [llama + "post_attention_layernorm.weight"],
            f"blocks.{i}.mlp.gate_up.weight": [llama + "mlp.gate_proj.weight",
                                               llama + "mlp.up_proj.weight"],
            f"blocks.{i}.mlp.down.weight": [llama + "mlp.down_proj.weight"],
        })
    return sources


def weight_files(folder: Path) -> dict[str, Path]:
    """{Llama tensor name: the safetensors file holding it}: model.safetensors, or the
    shards model.safetensors.index.json lists."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise UserError(f"{index}: over 64 MB, not an index of shards")
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return {str(name): folder / str(file) for name, file in weight_map.items()}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise UserError(f"{index}: not a safetensors index (no weight_map of names to "
                            "files)") from None
    single = folder / "model.safetensors"
    if not single.is_file():
        raise UserError(f"model.init_from: {folder} has no model.safetensors (nor an index "
                        "of shards); slimcore reads safetensors only (a pytorch_model.bin "
                        "can be converted with transformers' save_pretrained)")
    with SafetensorsFile(single) as f:
        return {name: single for name in f.names()}


def load_llama_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Every parameter of `model` from the folder's safetensors; a tensor missing, of
    another shape, or one the model has no place for, is one line naming it."""
    folder = Path(folder)
    files = weight_files(folder)
    sources = llama_sources(model)
    wanted = {name for names in sources.values() for name in names}
    unplaced = sorted(n for n in files if n not in wanted and not n.endswith(NOT_WEIGHTS))
    if unplaced:
        raise UserError(f"{folder}: holds {len(unplaced)} tensors slimcore's model has no "
                        f"place for (e.g. {', '.join(unplaced[:3])}): another architecture")
    missing = sorted(wanted - set(files))
    if missing:
        raise UserError(f"{folder}: has no tensor {missing[0]} ({len(missing)} missing)")
    parameters = dict(model.named_parameters())
    with OpenFiles() as opened:
        for name, names in sources.items():
            parts = [opened.tensor(files[n], n) for n in names]
            fill(parameters[name], parts, name, names)
            for n in names:
                opened.release(files[n], n)


def fill(parameter: torch.nn.Parameter, parts: list[torch.Tensor], name: str,
         names: list[str]) -> None:
    """The parameter's rows from `parts`, stacked; under FSDP (a DTensor) this rank's rows."""
    rows = sum(p.shape[0] for p in parts)
    shape = (rows, *parts[0].shape[1:])
    if tuple(parameter.shape) != shape or any(p.shape[1:] != parts[0].shape[1:] for p in parts):
        raise UserError(f"{names[0]}: shape {[tuple(p.shape) for p in parts]} does not fill "
                        f"{name} of shape {tuple(parameter.shape)} (config.json and the "
                        "weights disagree)")
    with torch.no_grad():
        if hasattr(parameter, "to_local"):  # FSDP: build the whole, keep this rank's shard
            from torch.distributed.tensor import distribute_tensor

            whole = torch.cat([p.to(parameter.dtype) for p in parts])
            shard = distribute_tensor(whole, parameter.device_mesh, parameter.placements,
                                      src_data_rank=None)
            parameter.to_local().copy_(shard.to_local())
            return
        start = 0
        for part in parts:
            parameter[start:start + part.shape[0]].copy_(part)  # converts the dtype
            start += part.shape[0]


class OpenFiles:
    """The safetensors files of a folder, each opened once, closed together."""

    def __init__(self):
        self.files: dict[Path, SafetensorsFile] = {}

    def tensor(self, path: Path, name: str) -> torch.Tensor:
        if path not in self.files:
            if not path.is_file():
                raise UserError(f"{path}: listed in the index, not there")
            self.files[path] = SafetensorsFile(path)
        if name not in self.files[path].header:
            raise UserError(f"{path}: has no tensor {name} (the index says it does)")
        return self.files[path].tensor(name)

    def release(self, path: Path, name: str) -> None:
        self.files[path].release(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in self.files.values():
            f.close()
