"""A trained model out of a checkpoint, for the commands that use one (generate, eval,
export): the record, the config it was trained with, its tokenizer and the model.

    trained = load_trained("runs/quickstart", pm, device)     a run folder: its newest
    trained = load_trained("runs/q/checkpoints/checkpoint_step_300.bin", pm, device)
    trained.model, trained.tokenizer, trained.config, trained.checkpoint

The checkpointer that reads it is the one the run folder's config.yaml names (else
`three_file`, or `--checkpointer`); it verifies the files as it does for a resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..storage.cache import cache_dir, read_checked
from ..contracts.checkpoint import Checkpoint
from ..config.schema import CheckpointSection, RunConfig, declared_sections, parse_config
from ..contracts.errors import UserError
from ..model.gpt import GPT
from ..model.ops import select_ops
from ..contracts.paths import RunPaths
from ..contracts.run import Run
from ..text.tokenizer import Tokenizer

DEFAULT_CHECKPOINTER = CheckpointSection().checkpointer


@dataclass
class TrainedModel:
    checkpoint: Checkpoint  # the record as saved (checkpoint.path: where it was read)
    folder: Path  # the run folder it belongs to
    config: RunConfig  # the config the run trained with
    tokenizer: Tokenizer
    model: GPT  # in eval mode, on the device asked for

    @property
    def description(self) -> str:
        m = self.config.model
        return (f"{self.checkpoint.path}: step {self.checkpoint.step}, width {m.width}, "
                f"{m.layers} layers, vocabulary {self.tokenizer.vocab_size}")


def load_trained(source: str, pm, device: torch.device, checkpointer: str | None = None,
                 key: str = "SOURCE") -> TrainedModel:
    """The model of checkpoint or run folder `source`; UserError (naming `key`) when it is
    missing, damaged, or holds no checkpoint."""
    path = Path(source)
    if not path.exists():
        raise UserError(f"{key}: {source} does not exist; give a checkpoint "
                        "(checkpoints/checkpoint_step_N.bin) or a run folder (runs/NAME)")
    folder = path if path.is_dir() else path.parent.parent
    checkpoint = read_source(path, folder, pm, checkpointer, key)
    config = saved_config(checkpoint.config, pm, f"{checkpoint.path} (its config)")
    tokenizer = saved_tokenizer(checkpoint, folder, config, key)
    model = build_model(checkpoint, config, tokenizer, device)
    return TrainedModel(checkpoint=checkpoint, folder=folder, config=config,
                        tokenizer=tokenizer, model=model)


def read_source(path: Path, folder: Path, pm, checkpointer: str | None,
                key: str) -> Checkpoint:
    """The checkpoint `path` names (a run folder: its newest intact one), verified by its
    checkpointer."""
    paths = RunPaths(folder)
    name = checkpointer or folder_checkpointer(paths) or DEFAULT_CHECKPOINTER
    pm.check_selectable(name, "checkpointer", "--checkpointer")
    if path.is_dir() and not paths.checkpoints.is_dir():
        raise UserError(f"{key}: {path} is a folder without checkpoints/; give a run folder "
                        "(runs/NAME) or a checkpoint file")
    run = Run(config=parse_config({}, declared_sections(pm), "<defaults>"), output_dir=folder,
              device=torch.device("cpu"), plugins=pm, run_id=folder_run_id(paths))
    saved = pm.hook.load_checkpoint(checkpointer=name, run=run,
                                    path="auto" if path.is_dir() else str(path))
    if not saved:
        raise UserError(f"{key}: {paths.checkpoints} holds no intact checkpoint of this run "
                        "(train with checkpoint.checkpointer set, or give a checkpoint file)")
    return saved


def folder_checkpointer(paths: RunPaths) -> str | None:
    """The checkpointer the run in this folder used (its config.yaml), if it says."""
    try:
        recorded = yaml.safe_load(paths.config.read_text())
        return recorded["checkpoint"]["checkpointer"] or None
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def folder_run_id(paths: RunPaths) -> str | None:
    try:
        return json.loads(paths.record.read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def saved_config(raw: dict, pm, source: str) -> RunConfig:
    """A config as a checkpoint recorded it (`source` names it in errors). Sections of
    plugins not installed here are left out (a command that needs one says so when it
    asks)."""
    sections = declared_sections(pm)
    return parse_config(raw, sections, source,
                        ignorable={name for name in raw if name not in sections})


def saved_tokenizer(checkpoint: Checkpoint, folder: Path, config: RunConfig,
                    key: str) -> Tokenizer:
    """The checkpoint's own tokenizer; for a record from before checkpoints carried it, the
    run folder's or the cache's copy with its fingerprint."""
    if checkpoint.tokenizer_model is not None:
        return Tokenizer(checkpoint.tokenizer_model, checkpoint.tokenizer_fingerprint)
    fingerprint = checkpoint.tokenizer_fingerprint or ""
    candidates = [RunPaths(folder).tokenizer]
    if config.tokenizer.path:
        candidates.append(Path(config.tokenizer.path))
    for candidate in candidates:
        if candidate.is_file():
            return Tokenizer(candidate.read_bytes(), fingerprint, candidate)
    cached = cache_dir(config.tokenizer.cache_dir) / "tokenizers" / f"spm-{fingerprint[:20]}.model"
    proto = read_checked(cached) if fingerprint else None
    if proto is None:
        raise UserError(f"{key}: {checkpoint.path} was saved before checkpoints carried their "
                        f"tokenizer, and no copy of it ({cached.name}) is in the cache; resume "
                        "it for one step with the same tokenizer settings to save one that does")
    return Tokenizer(proto, fingerprint, cached)


def build_model(checkpoint: Checkpoint, config: RunConfig, tokenizer: Tokenizer,
                device: torch.device) -> GPT:
    model = GPT(config.model, tokenizer.vocab_size, select_ops("auto", device))
    try:
        model.load_state_dict(checkpoint.model)
    except RuntimeError as e:
        first = (str(e).splitlines()[1:] or [str(e)])[0].strip()[:300]
        raise UserError(f"{checkpoint.path}: its weights do not fit the model its config "
                        f"describes ({first})") from None
    return model.to(device).eval()
