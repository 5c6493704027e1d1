"""Plugin `hf`: `slimcore export SOURCE --format hf --output DIR` writes a Hugging Face model
folder that `transformers` (and so lm-evaluation-harness) loads without custom code:

    config.json                LlamaForCausalLM: slimcore's decoder is Llama's (RMSNorm,
                               rotary embeddings on half-split pairs, SwiGLU, no biases;
                               grouped-query attention, tied output layer and Llama 3's
                               rotary scaling where the model has them)
    generation_config.json     BOS and EOS (greedy unless a caller asks to sample)
    model.safetensors          the weights under Llama's names
    tokenizer.model            the SentencePiece model itself
    tokenizer.json             the same tokenizer for the `tokenizers` library (below)
    tokenizer_config.json, special_tokens_map.json

A run started from a folder's tokenizer.json (`model.init_from`) exports that tokenizer.json
as it was, with no tokenizer.model.

tokenizer.json is built here, not converted by transformers: its converter puts a Metaspace
pre-tokenizer in front, which adds no dummy prefix to a text that starts with a space,
where SentencePiece adds one always; the normalizer below (prefix, then spaces to U+2581)
is exactly SentencePiece's `add_dummy_prefix` with identity normalization, and the merges
are those of SentencePiece's pieces in score order, so the ids are SentencePiece's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from slimcore import Checkpoint, ExportFormat, UserError, hookimpl

NAME = "hf"
SPACE = "\u2581"  # SentencePiece's space sign


class HuggingFace(ExportFormat):
    """A Llama folder that transformers loads without custom code (module docstring)."""

    name = NAME

    def export(self, checkpoint: Checkpoint, output: Path, dtype: torch.dtype) -> str:
        model = checkpoint.config.get("model") or {}
        if checkpoint.tokenizer_model is None:
            raise UserError(f"--format hf: {checkpoint.path} carries no tokenizer to export")
        tokenizer = tokenizer_files(bytes(checkpoint.tokenizer_model), int(model["seq_len"]))
        weights = llama_weights(checkpoint.model, Shape.of(model))
        vocab_size = weights["model.embed_tokens.weight"].shape[0]
        if vocab_size < tokenizer.vocab_size:
            raise UserError(f"--format hf: {checkpoint.path} has {vocab_size} embeddings and its "
                            f"tokenizer {tokenizer.vocab_size} pieces; it cannot be exported")
        save_file({name: t.to(dtype).contiguous() for name, t in weights.items()},
                  str(output / "model.safetensors"), metadata={"format": "pt"})
        mode_of_new_files(output / "model.safetensors")
        write_json(output / "config.json", llama_config(model, tokenizer, vocab_size, dtype))
        write_json(output / "generation_config.json", {
            "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id})
        for name, content in tokenizer.files.items():
            if isinstance(content, bytes):
                (output / name).write_bytes(content)
            else:
                write_json(output / name, content)
        return f"LlamaForCausalLM, {tokenizer.vocab_size} pieces, {dtype}"


@dataclass(frozen=True)
class TokenizerFiles:
    vocab_size: int
    bos_id: int
    eos_id: int
    files: dict  # file name: bytes, or a dict written as JSON


def tokenizer_files(stored: bytes, seq_len: int) -> TokenizerFiles:
    """The tokenizer's files of the folder: a SentencePiece model with a tokenizer.json made
    from it, or a tokenizer.json the run started from (slimcore's envelope: plugins.md)."""
    if stored[:1] == b"{":
        return json_tokenizer_files(json.loads(stored), seq_len)
    processor = spm.SentencePieceProcessor(model_proto=stored)
    specials = special_tokens(processor)
    return TokenizerFiles(processor.vocab_size(), processor.bos_id(), processor.eos_id(), {
        "tokenizer.model": stored, "tokenizer.json": tokenizer_json(processor),
        "special_tokens_map.json": specials,
        "tokenizer_config.json": {
            # The generic class that takes tokenizer.json as it is (Llama's class would
            # rebuild the pipeline its own way).
            "tokenizer_class": "PreTrainedTokenizerFast", **specials,
            "add_bos_token": True, "add_eos_token": False,
            # "<s>" written in a text is text, as for SentencePiece, not the BOS token.
            "split_special_tokens": True,
            "clean_up_tokenization_spaces": False, "model_max_length": seq_len}})


def json_tokenizer_files(stored: dict, seq_len: int) -> TokenizerFiles:
    pipeline = stored["tokenizer"]
    names = {int(t["id"]): t["content"] for t in pipeline.get("added_tokens") or []}
    vocab = (pipeline.get("model") or {}).get("vocab") or {}
    if isinstance(vocab, dict):
        names = {**{int(i): token for token, i in vocab.items()}, **names}
    bos, eos = int(stored["bos_id"]), int(stored["eos_id"])
    specials = {"bos_token": names.get(bos), "eos_token": names.get(eos)}
    return TokenizerFiles(len(names), bos, eos, {
        "tokenizer.json": pipeline, "special_tokens_map.json": specials,
        "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", **specials,
                                  "clean_up_tokenization_spaces": False,
                                  "model_max_length": seq_len}})


@hookimpl
def register_export_formats():
    return [HuggingFace()]


def mode_of_new_files(path: Path) -> None:
    """safetensors makes its file 0600; the folder's other files have the mode the umask
    gives a new file, which a serving container sharing the folder can read: so this one."""
    probe = path.with_name(".mode-probe")
    probe.touch()
    path.chmod(probe.stat().st_mode & 0o777)
    probe.unlink()


@dataclass(frozen=True)
class Shape:
    """What the export needs of the checkpoint's `model` section."""

    width: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp_hidden: int
    tied: bool

    @classmethod
    def of(cls, model: dict) -> "Shape":
        width, heads = int(model["width"]), int(model["heads"])
        return cls(width=width, layers=int(model["layers"]), heads=heads,
                   kv_heads=int(model.get("kv_heads") or heads),
                   head_dim=int(model.get("head_dim") or width // heads),
                   mlp_hidden=int(model["mlp_hidden"]), tied=bool(model.get("tie_embeddings")))


def llama_weights(state: dict[str, torch.Tensor], shape: Shape) -> dict[str, torch.Tensor]:
    """slimcore's state dict under Llama's names: the fused QKV projection split in three
    (k and v of kv_heads heads), the fused gate-up projection in two (gate first); a tied
    output layer is the embedding's matrix, written once."""
    block_parts = ("attn_norm", "attn.qkv", "attn.out", "mlp_norm", "mlp.gate_up", "mlp.down")
    expected = {"embed.weight", "norm.weight", "head.weight"} | {
        f"blocks.{i}.{part}.weight" for i in range(shape.layers) for part in block_parts}
    if set(state) != expected:
        odd = sorted(set(state) ^ expected)
        raise UserError(f"--format hf: the model is not slimcore's {shape.layers}-layer GPT "
                        f"({len(odd)} tensors differ from it, e.g. {', '.join(odd[:3])})")
    out = {"model.embed_tokens.weight": state["embed.weight"],
           "model.norm.weight": state["norm.weight"]}
    if not shape.tied:
        out["lm_head.weight"] = state["head.weight"]
    sizes = [shape.heads * shape.head_dim] + 2 * [shape.kv_heads * shape.head_dim]
    for i in range(shape.layers):
        block, llama = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = state[block + "attn.qkv.weight"].split(sizes, dim=0)
        gate, up = state[block + "mlp.gate_up.weight"].split(shape.mlp_hidden, dim=0)
        out.update({
            llama + "input_layernorm.weight": state[block + "attn_norm.weight"],
            llama + "self_attn.q_proj.weight": q, llama + "self_attn.k_proj.weight": k,
            llama + "self_attn.v_proj.weight": v,
            llama + "self_attn.o_proj.weight": state[block + "attn.out.weight"],
            llama + "post_attention_layernorm.weight": state[block + "mlp_norm.weight"],
            llama + "mlp.gate_proj.weight": gate, llama + "mlp.up_proj.weight": up,
            llama + "mlp.down_proj.weight": state[block + "mlp.down.weight"],
        })
    return out


def llama_config(model: dict, tokenizer: TokenizerFiles, vocab_size: int,
                 dtype: torch.dtype) -> dict:
    shape = Shape.of(model)
    theta = float(model.get("rope_theta", 10000.0))
    rope = {"rope_type": "default", "rope_theta": theta}
    if model.get("rope_scaling", "none") == "llama3":
        rope = {"rope_type": "llama3", "rope_theta": theta,
                "factor": float(model["rope_factor"]),
                "low_freq_factor": float(model["rope_low_freq_factor"]),
                "high_freq_factor": float(model["rope_high_freq_factor"]),
                "original_max_position_embeddings": int(model["rope_original_context"])}
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab_size, "hidden_size": shape.width,
        "intermediate_size": shape.mlp_hidden,
        "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads, "head_dim": shape.head_dim,
        "hidden_act": "silu", "max_position_embeddings": int(model["seq_len"]),
        "rms_norm_eps": float(model.get("norm_eps", 1e-5)),
        # rope_theta (and rope_scaling) for transformers 4, rope_parameters for 5
        "rope_theta": theta, "rope_parameters": rope,
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": shape.tied,
        "initializer_range": float(model.get("init_std", 0.02)),
        "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
        "torch_dtype": str(dtype).removeprefix("torch."), "use_cache": True,
    }
    if rope["rope_type"] != "default":
        config["rope_scaling"] = rope
    return config


def special_tokens(processor) -> dict:
    return {"bos_token": processor.id_to_piece(processor.bos_id()),
            "eos_token": processor.id_to_piece(processor.eos_id()),
            "unk_token": processor.id_to_piece(processor.unk_id())}


def tokenizer_json(processor) -> dict:
    """The SentencePiece BPE model as a `tokenizers` pipeline with the same ids."""
    size = processor.get_piece_size()
    vocab = {processor.id_to_piece(i): i for i in range(size)}
    normal = {processor.id_to_piece(i) for i in range(size)
              if not (processor.is_byte(i) or processor.is_control(i)
                      or processor.is_unknown(i) or processor.is_unused(i))}
    # Every split of a piece into two pieces is a merge, ranked by the piece's id (pieces
    # are in score order), then by the left part's length: transformers' own ordering.
    merges = sorted((vocab[piece], k, len(piece) - k, piece[:k], piece[k:])
                    for piece in normal for k in range(1, len(piece))
                    if piece[:k] in normal and piece[k:] in normal)
    special = [{"id": i, "content": processor.id_to_piece(i), "single_word": False,
                "lstrip": False, "rstrip": False, "normalized": False, "special": True}
               for i in range(size) if processor.is_control(i) or processor.is_unknown(i)]
    bos = processor.id_to_piece(processor.bos_id())
    bos_then = [{"SpecialToken": {"id": bos, "type_id": 0}}]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": bos_then + [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": bos_then + [{"Sequence": {"id": "A", "type_id": 0}},
                                {"SpecialToken": {"id": bos, "type_id": 1}},
                                {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [processor.bos_id()], "tokens": [bos]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None,
                  "unk_token": processor.id_to_piece(processor.unk_id()),
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[left, right] for *_, left, right in merges]},
    }


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
