"""A trained model out of a checkpoint, for the commands that use one (generate, eval,
export): the record, the config it was trained with, its tokenizer and the model.

    trained = load_trained("runs/quickstart", plugins, device)     a run folder: its newest
    trained = load_trained("path/to/a/checkpoint", plugins, device)    a checkpoint file
    trained.model, trained.tokenizer, trained.config, trained.checkpoint

The run folder of a checkpoint file is the nearest folder above it that holds a run record
(run.json). The checkpointer that reads it is `--checkpointer`, else the one the run folder's
config.yaml names, else the config's default; it verifies the files as it does for a resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.parse import parse_config
from ..config.schema import CheckpointSection, RunConfig
from ..contracts.checkpoint import Checkpoint
from ..contracts.checkpointer import Checkpointer
from ..contracts.errors import UserError
from ..contracts.paths import RunPaths
from ..launch.folder import read_run_record, recorded_checkpointer, run_folder_of
from ..launch.resume import is_run_folder
from ..model.gpt import GPT, model_vocab, parameter_count
from ..model.ops import select_ops
from ..text.tokenizer import Tokenizer, stored_tokenizer

DEFAULT_CHECKPOINTER = CheckpointSection().checkpointer
SOURCE_HELP = "a checkpoint file or a run folder (its newest checkpoint)"
CHECKPOINTER_HELP = ("the checkpointer plugin that reads it (default: the one the run folder's "
                     "config names, else the config's default)")


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


def load_trained(source: str, plugins, device: torch.device, checkpointer: str | None = None,
                 key: str = "SOURCE") -> TrainedModel:
    """The model of checkpoint or run folder `source`; UserError (naming `key`) when it is
    missing, damaged, or holds no checkpoint."""
    path = Path(source)
    if not path.exists():
        raise UserError(f"{key}: {source} does not exist; give a checkpoint file or a run "
                        "folder (runs/NAME)")
    folder = run_folder_of(path)
    checkpoint, reader = read_source(path, folder, plugins, checkpointer, key)
    config = saved_config(checkpoint.config, plugins, f"{checkpoint.path} (its config)")
    if checkpoint.tokenizer_model is None:
        raise UserError(f"{key}: {checkpoint.path} carries no tokenizer; it cannot be used")
    try:
        tokenizer = stored_tokenizer(bytes(checkpoint.tokenizer_model),
                                     checkpoint.tokenizer_fingerprint)
    except (RuntimeError, TypeError, ValueError) as e:  # SentencePiece's own parse failure
        raise UserError(f"{key}: {checkpoint.path} carries a tokenizer SentencePiece cannot "
                        f"read ({str(e).strip()[:200]}); the checkpoint is damaged") from None
    model = build_model(checkpoint, config, tokenizer, device, reader)
    return TrainedModel(checkpoint=checkpoint, folder=folder, config=config,
                        tokenizer=tokenizer, model=model)


def read_source(path: Path, folder: Path, plugins, checkpointer: str | None,
                key: str) -> tuple[Checkpoint, Checkpointer]:
    """The checkpoint `path` names (a run folder: its run's newest intact one), verified by
    its checkpointer; and that checkpointer."""
    paths = RunPaths(folder)
    name = checkpointer or recorded_checkpointer(paths) or DEFAULT_CHECKPOINTER
    reader = plugins.lookup("checkpointer", name, "--checkpointer")
    saved = reader.newest(folder, folder_run_id(paths)) if is_run_folder(path, reader) \
        else reader.load(str(path))
    if not saved:
        raise UserError(f"{key}: {path} holds no intact checkpoint of its run (give a run "
                        "folder of a run that saved one, or a checkpoint file)")
    return saved, reader


def folder_run_id(paths: RunPaths) -> str | None:
    return read_run_record(paths.root).get("run_id")


def saved_config(raw: dict, plugins, source: str) -> RunConfig:
    """A config as a checkpoint recorded it (`source` names it in errors). Sections of
    plugins not installed here are left out (a command that needs one says so when it
    asks)."""
    sections = plugins.sections
    return parse_config(raw, sections, source, warn_moves=False,
                        ignorable={name for name in raw if name not in sections})


def build_model(checkpoint: Checkpoint, config: RunConfig, tokenizer: Tokenizer,
                device: torch.device, reader: Checkpointer) -> GPT:
    """The record's model. A sharded checkpointer's record holds the weights' shapes only:
    its files are read into the model built here, and the record then holds its weights
    (an export format reads them there)."""
    check_config_fits_weights(checkpoint, config, tokenizer)
    model = GPT(config.model, model_vocab(config.model, tokenizer), select_ops("auto", device))
    try:
        if reader.sharded:
            check_shapes(model, checkpoint)
            reader.read_shards(checkpoint, {"model": model.state_dict()})
            checkpoint.model = model.state_dict()
        else:
            model.load_state_dict(checkpoint.model)
    except RuntimeError as e:
        first = (str(e).splitlines()[1:] or [str(e)])[0].strip()[:300]
        raise UserError(f"{checkpoint.path}: its weights do not fit the model its config "
                        f"describes ({first})") from None
    return model.to(device).eval()


def check_shapes(model: GPT, checkpoint: Checkpoint) -> None:
    """RuntimeError, as load_state_dict raises it, for names or shapes that differ."""
    wanted = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    held = {name: tuple(t.shape) for name, t in checkpoint.model.items()}
    if wanted != held:
        differ = sorted(n for n in wanted.keys() | held.keys() if wanted.get(n) != held.get(n))
        raise RuntimeError(f"weights differ:\n{', '.join(differ[:5])}")


def check_config_fits_weights(checkpoint: Checkpoint, config: RunConfig,
                              tokenizer: Tokenizer) -> None:
    """The model the checkpoint's config describes holds as many parameters as its weights,
    checked before anything is built: a config edited to 100,000 layers (its digest
    recomputed) would otherwise be built, to the end of the machine's memory."""
    described = parameter_count(config.model, model_vocab(config.model, tokenizer))
    held = sum(tensor.numel() for name, tensor in checkpoint.model.items()
               if not (config.model.tie_embeddings and name == "head.weight"))  # the embedding
    if described != held:
        m = config.model
        raise UserError(f"{checkpoint.path}: its config describes a model of {described:,} "
                        f"parameters (width {m.width}, {m.layers} layers, mlp_hidden "
                        f"{m.mlp_hidden}, vocabulary {tokenizer.vocab_size:,}) and its weights "
                        f"hold {held:,}; config and weights do not belong together (edited?), "
                        "so no model was built")
