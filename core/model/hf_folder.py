"""A local Hugging Face Llama folder to start a run from (`model.init_from`, `--init-from`):
its config.json gives the model's shape, its tokenizer the run's, its safetensors the first
weights (hf_weights.py). Anything in config.json that would make the model compute another
function than slimcore's GPT (biases, sliding windows, experts, another model_type) is one
line naming the key, before any tensor is read.

    folder = HFFolder.open("TinyLlama-1.1B")
    folder.apply_shape(config)        # the model section from config.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from ..config.schema import ModelSection, RunConfig
from ..contracts.errors import ConfigError, UserError

MAX_CONFIG_BYTES = 2**20
# config.json values that mean a function other than Llama's as slimcore computes it, when
# not the value given (or absent).
MUST_BE = {"attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
           "sliding_window": None, "quantization_config": None, "attention_dropout": 0.0,
           "use_sliding_window": False}
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")
ROPE_TYPES = {"default", "llama3"}


@dataclasses.dataclass
class HFFolder:
    path: Path
    config: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, key: str = "model.init_from") -> "HFFolder":
        folder = Path(path)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise UserError(f"{key}: {folder} has no config.json; give a local Hugging Face "
                            "model folder (download one with `hf download NAME --local-dir "
                            "DIR`)")
        if config_path.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{key}: {config_path} is over 1 MB: not a model's config")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError, UnicodeDecodeError) as e:
            raise UserError(f"{key}: {config_path} is not JSON ({str(e)[:80]})") from None
        if not isinstance(config, dict):
            raise UserError(f"{key}: {config_path} is not a JSON object")
        found = cls(folder, config)
        found.check_supported()
        return found

    def where(self, name: str) -> str:
        return f"{self.path / 'config.json'}: {name}"

    def check_supported(self) -> None:
        c = self.config
        if c.get("model_type") != "llama":
            raise UserError(f"{self.where('model_type')} is {c.get('model_type')!r}; slimcore "
                            "continues Llama-family models (model_type llama) only")
        for name, wanted in MUST_BE.items():
            if c.get(name) is not None and c[name] != wanted:
                raise UserError(f"{self.where(name)} is {c[name]!r}: a model slimcore's GPT "
                                f"does not compute (it has {name} {wanted!r})")
        for name in EXPERT_KEYS:
            if c.get(name):
                raise UserError(f"{self.where(name)} is {c[name]!r}: a mixture of experts, "
                                "which slimcore's GPT is not")
        rope = self.rope()
        if rope.get("rope_type", rope.get("type", "default")) not in ROPE_TYPES:
            raise UserError(f"{self.where(self.rope_key())} is of type "
                            f"{rope.get('rope_type', rope.get('type'))!r}; slimcore applies "
                            "none or llama3")

    def rope_key(self) -> str:
        """rope_parameters (transformers 5) or rope_scaling (4), whichever is there."""
        return "rope_parameters" if self.config.get("rope_parameters") else "rope_scaling"

    def rope(self) -> dict:
        rope = self.config.get(self.rope_key()) or {}
        if not isinstance(rope, dict):
            raise UserError(f"{self.where(self.rope_key())} is not an object")
        return rope

    def shape(self) -> dict[str, Any]:
        """The model section's keys config.json decides."""
        c, rope = self.config, self.rope()
        try:
            width, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
            shape = {"width": width, "layers": int(c["num_hidden_layers"]), "heads": heads,
                     "kv_heads": int(c.get("num_key_value_heads") or heads),
                     "head_dim": int(c.get("head_dim") or width // heads),
                     "mlp_hidden": int(c["intermediate_size"]),
                     "vocab_size": int(c["vocab_size"]),
                     "norm_eps": float(c.get("rms_norm_eps", 1e-6)),
                     "rope_theta": float(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
                     "tie_embeddings": bool(c.get("tie_word_embeddings", False))}
        except KeyError as e:
            raise UserError(f"{self.where(e.args[0])} is missing") from None
        except (TypeError, ValueError) as e:
            raise UserError(f"{self.path / 'config.json'}: a shape value is not a number "
                            f"({e})") from None
        if rope.get("rope_type", rope.get("type", "default")) == "llama3":
            shape.update(rope_scaling="llama3", rope_factor=float(rope["factor"]),
                         rope_low_freq_factor=float(rope["low_freq_factor"]),
                         rope_high_freq_factor=float(rope["high_freq_factor"]),
                         rope_original_context=int(rope["original_max_position_embeddings"]))
        return shape

    def apply_shape(self, config: RunConfig) -> None:
        """config.model takes config.json's shape. A key the YAML set to something else than
        both its default and the folder's value is one line: the folder decides the shape."""
        defaults, current = ModelSection(), config.model
        shape = self.shape()
        for name, value in shape.items():
            mine = getattr(current, name)
            if mine != value and mine != getattr(defaults, name):
                raise ConfigError(f"model.{name}", f"{mine!r} here, {value!r} in {self.path}/config.json; "
                                        "leave it out: model.init_from's folder gives the "
                                        "model's shape", config.source)
        limit = self.config.get("max_position_embeddings")
        if isinstance(limit, int) and current.seq_len > limit:
            raise ConfigError("model.seq_len", f"{current.seq_len} exceeds max_position_embeddings "
                                         f"{limit} of {self.path}/config.json", config.source)
        try:
            config.model = dataclasses.replace(current, **shape)
        except ConfigError as e:
            raise UserError(f"{self.path}/config.json gives a shape slimcore cannot build "
                            f"({e})") from None

    def tokenizer(self, log=print):
        """The folder's tokenizer: its SentencePiece tokenizer.model, else its tokenizer.json
        (run by the tokenizers library); BOS and EOS as config.json names them, and no more
        pieces than the model has embeddings."""
        from ..text.json_tokenizer import envelope
        from ..text.tokenizer import load_tokenizer, stored_tokenizer

        model_file, json_file = self.path / "tokenizer.model", self.path / "tokenizer.json"
        if model_file.is_file():
            path, tokenizer = model_file, load_tokenizer(model_file)
        elif json_file.is_file():
            ids = {name: self.token_id(name) for name in ("bos_token_id", "eos_token_id")}
            if not all(isinstance(v, int) for v in ids.values()):
                raise UserError(f"{self.where('bos_token_id')}: config.json must name "
                                "bos_token_id and eos_token_id for its tokenizer.json")
            data = envelope(json_file.read_text(encoding="utf-8"), ids["bos_token_id"],
                            ids["eos_token_id"])
            path = json_file
            tokenizer = stored_tokenizer(data, hashlib.sha256(data).hexdigest(), json_file)
        else:
            raise UserError(f"model.init_from: {self.path} has neither tokenizer.model nor "
                            "tokenizer.json; set tokenizer.path to the model's tokenizer")
        self.check_tokenizer(tokenizer, path)
        log(f"tokenizer: {path}")
        return tokenizer

    def token_id(self, name: str):
        """config.json's bos_token_id or eos_token_id (the first, where it lists several)."""
        value = self.config.get(name)
        return value[0] if isinstance(value, list) and value else value

    def check_tokenizer(self, tokenizer, path: Path) -> None:
        for name, ours in (("bos_token_id", tokenizer.bos_id), ("eos_token_id", tokenizer.eos_id)):
            theirs = self.token_id(name)
            if isinstance(theirs, int) and theirs != ours:
                raise UserError(f"{self.where(name)} is {theirs}, and {path} has {ours}; the "
                                "tokenizer is not the model's")
        vocab = self.config.get("vocab_size")
        if isinstance(vocab, int) and tokenizer.vocab_size > vocab:
            raise UserError(f"{path} has {tokenizer.vocab_size:,} pieces, more than the "
                            f"{vocab:,} embeddings of {self.path}/config.json")
