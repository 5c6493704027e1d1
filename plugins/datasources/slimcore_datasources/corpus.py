"""The corpus reader beneath both sources: documents from `data.path`, streamed with
Hugging Face `datasets` so that local shards and the Hub go through one code path.

`data.path` may be:
    bundled                          the State of the Union corpus (offline; see bundled.py)
    a local file, folder or glob     .jsonl / .json / .jsonl.zst (SlimPajama records),
                                     .txt (one document per file), .parquet
    a Hub dataset id (owner/name)    streamed; `data.data_files` picks shards by pattern
    http(s):// URLs                  of files of the kinds above (several: comma-separated)

Records are read through stream.resilient_records: on a background thread, each within
`data.timeout_s`, restarted where they stopped after a stall or a read error.
"""

from __future__ import annotations

import glob
import os
import socket
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from slimcore import Run, UserError
from slimcore.tokenizer import default_cache_dir

from .bundled import bundled_shards
from .stream import resilient_records

BUILDERS = {".jsonl": "json", ".json": "json", ".zst": "json", ".txt": "text",
            ".parquet": "parquet"}
OFFLINE_HINT = ("without network, run examples/quickstart.yaml (the bundled corpus) or set "
                "data.path to local .jsonl.zst, .jsonl, .txt or .parquet files")


def local_files(path: str) -> list[str]:
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        return sorted(str(p) for p in candidate.rglob("*")
                      if p.is_file() and _builder_for(p.name))
    if candidate.is_file():
        return [str(candidate)]
    return sorted(glob.glob(str(candidate), recursive=True))


def _builder_for(name: str) -> str | None:
    return BUILDERS.get(Path(name).suffix)


def looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "/", "~"))


def open_dataset(run: Run):
    """The streaming `datasets.IterableDataset` of the run's corpus."""
    data = run.config.data
    cache = Path(run.config.tokenizer.cache_dir) if run.config.tokenizer.cache_dir \
        else default_cache_dir()
    if data.path == "bundled":
        return _stream_files(bundled_shards(cache), "data.path")
    if data.path.startswith(("http://", "https://")):
        return _stream_files([u.strip() for u in data.path.split(",") if u.strip()],
                             "data.path")
    files = local_files(data.path)
    if files:
        return _stream_files(files, "data.path")
    if looks_like_hub_id(data.path):
        return _stream_hub(data.path, data.data_files)
    raise UserError(f"data.path: no file matches '{data.path}' and it is not a Hub dataset "
                    "id (owner/name); give bundled, a file, a folder or a glob")


def _stream_files(files: list[str], key: str):
    import datasets

    # slimcore retries whole records (stream.py); datasets' own 20 x 5 s read retries would
    # hide a stall from data.timeout_s for minutes.
    datasets.config.STREAMING_READ_MAX_RETRIES = 1
    datasets.config.STREAMING_READ_RETRY_INTERVAL = 0

    builders = {_builder_for(f) for f in files}
    if None in builders or len(builders) != 1:
        kinds = ", ".join(sorted(BUILDERS))
        raise UserError(f"{key}: files must share one supported kind ({kinds}); got "
                        f"{', '.join(sorted({Path(f).name for f in files})[:3])}")
    builder = builders.pop()
    kwargs = {"sample_by": "document"} if builder == "text" else {}
    return datasets.load_dataset(builder, data_files=files, split="train", streaming=True,
                                 **kwargs)


def _stream_hub(repo: str, data_files: str | None):
    check_hub_reachable(repo)
    import datasets

    try:
        return datasets.load_dataset(repo, data_files={"train": data_files} if data_files
                                     else None, split="train", streaming=True)
    except (ConnectionError, OSError, TimeoutError) as e:
        raise UserError(f"data.path: cannot stream '{repo}' from the Hugging Face Hub "
                        f"({type(e).__name__}: {str(e)[:200]}); {OFFLINE_HINT}") from None


def check_hub_reachable(repo: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after minutes of retries, on a machine without network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise UserError(f"data.path: '{repo}' is on the Hugging Face Hub but HF_HUB_OFFLINE "
                        f"is set; {OFFLINE_HINT}")
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"data.path: cannot reach the Hugging Face Hub ({host}: {e}) to "
                        f"stream '{repo}'; {OFFLINE_HINT}") from None


def iter_documents(run: Run, epochs: int | None = None) -> Iterator[str]:
    """Texts of the corpus, pass after pass (`epochs=None`: forever), this rank's share."""
    data = run.config.data
    field = data.text_field
    wanted_sets = set(data.set_names)
    epoch = 0
    while epochs is None or epoch < epochs:
        produced = False
        # Opened inside the retry loop: the first request can stall or drop too.
        records = resilient_records(lambda: iter(open_dataset(run)), data.path, data.timeout_s,
                                    data.max_retries, data.retry_backoff_s)
        for index, record in enumerate(records):
            if index % run.world_size != run.rank:
                continue
            if field not in record:
                raise UserError(f"data.text_field: records of {data.path} have no "
                                f"'{field}' (fields: {', '.join(record)})")
            if wanted_sets and (record.get("meta") or {}).get("redpajama_set_name") \
                    not in wanted_sets:
                continue
            produced = True
            yield record[field]
        if not produced:
            only = f" of data.set_names {sorted(wanted_sets)}" if wanted_sets else ""
            raise UserError(f"data.path: '{data.path}' holds no documents{only}")
        epoch += 1


def first_documents(run: Run, max_documents: int) -> list[str]:
    """The tokenizer's training sample: the corpus's first documents, one pass at most."""
    texts = []
    for text in iter_documents(run, epochs=1):
        texts.append(text)
        if len(texts) >= max_documents:
            break
    return texts
