"""Which files make up a corpus: the bundled corpus's shards, local files, folders and globs,
http(s) URLs, or a Hub dataset's train files as `datasets` resolves them."""

from __future__ import annotations

import glob
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from slimcore import UserError, cache_dir

from .bundled import bundled_shards
from .config import OFFLINE_HINT
from .records import KINDS, kind_of


def corpus_files(path: str, data_files: str | None, key: str = "corpus.path",
                 cache: str | None = None) -> list[str]:
    """The shards of the corpus at `path`: local paths or URLs, in a fixed order (the bundled
    corpus's laid out in the cache folder `cache`: tokenizer.cache_dir)."""
    if path == "bundled":
        return bundled_shards(cache_dir(cache))
    if path.startswith(("http://", "https://")):
        return checked_kinds([u.strip() for u in path.split(",") if u.strip()], key)
    files = local_files(path, key)
    if files:
        return checked_kinds(files, key)
    if looks_like_hub_id(path):
        return hub_files(path, data_files, key)
    raise UserError(f"{key}: no file matches '{path}' and it is not a Hub dataset "
                    "id (owner/name); give bundled, a file, a folder or a glob")


def local_files(path: str, key: str = "corpus.path") -> list[str]:
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        present = sorted(p for p in candidate.rglob("*") if p.is_file())
        files = [str(p) for p in present if kind_of(p.name)]
        if present and not files:  # a folder of files none of which is read: say so
            raise UserError(f"{key}: {path} holds {len(present)} files and none of a kind "
                            f"slimcore reads (such as {present[0].name}); {KINDS_HINT}")
        return files
    if candidate.is_file():
        return [str(candidate)]
    return sorted(p for p in glob.glob(str(candidate), recursive=True) if os.path.isfile(p))


def checked_kinds(files: list[str], key: str) -> list[str]:
    unknown = [f for f in files if kind_of(f) is None]
    if unknown:
        raise UserError(f"{key}: {unknown[0]} is not a kind of file slimcore reads; "
                        f"{KINDS_HINT}")
    return files


KINDS_HINT = ("a name must end in .jsonl, .json, .jsonl.zst (or .zst), .jsonl.gz (or .json.gz), "
              ".txt or .parquet")


def looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "/", "~"))


def hub_files(repo: str, data_files: str | None, key: str) -> list[str]:
    """The train files of a Hub dataset, as `datasets` resolves them (hf:// URLs)."""
    check_hub_reachable(repo, key)
    return resolved_files(repo, data_files, key)


def resolved_files(repo: str, data_files: str | None, key: str) -> list[str]:
    """The train split's files of a dataset repo (a Hub id, or a folder laid out like one),
    resolved by `datasets` exactly as its own streaming does."""
    import datasets

    matching = f" matching {data_files}" if data_files else ""
    try:
        builder = datasets.load_dataset_builder(
            repo, data_files={"train": data_files} if data_files else None)
        files = list((builder.config.data_files or {}).get("train") or [])
    except datasets.exceptions.DataFilesNotFoundError:
        raise UserError(f"{key}: '{repo}' has no data files{matching}; check "
                        f"corpus.{'eval_' if 'eval' in key else ''}data_files") from None
    except (ConnectionError, OSError, TimeoutError) as e:
        raise UserError(f"{key}: cannot list '{repo}' on the Hugging Face Hub "
                        f"({type(e).__name__}: {str(e)[:200]}); {OFFLINE_HINT}") from None
    except (ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise UserError(f"{key}: '{repo}' has no train files to stream{matching} "
                        f"({type(e).__name__}: {str(e)[:200]})") from None
    if not files:
        raise UserError(f"{key}: '{repo}' has no train files{matching}")
    return checked_kinds([str(f) for f in files], key)


def check_hub_reachable(repo: str, key: str = "corpus.path", timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after minutes of retries, on a machine without network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise UserError(f"{key}: '{repo}' is on the Hugging Face Hub but HF_HUB_OFFLINE "
                        f"is set; {OFFLINE_HINT}")
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname, endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"{key}: cannot reach the Hugging Face Hub ({host}: {e}) to "
                        f"stream '{repo}'; {OFFLINE_HINT}") from None
