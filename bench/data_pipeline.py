"""Data pipeline throughput and memory: the `chunk` and `sample` sources against the bare
SentencePiece encode rate, on the bundled corpus and on a corpus shaped like SlimPajama
(most documents a few KB, 2% of them books of 0.5 to 5 MB), with each measurement's peak
resident memory; and resident memory as a stream goes from shard 10 to shard 100.

    python bench/data_pipeline.py [--cores 1] [--tokens 2000000] [--repeats 3]

Everything runs in one process pinned to `--cores` CPUs (default one: the issue's target is
per core). Rates count the tokens the source hands out (B x (T + 1) per batch for `chunk`;
real, unpadded tokens for `sample`) per second of wall time from the source's creation.
The bare rate encodes the same documents, already in memory, with SentencePiece itself
(`processor.encode`) and the same batching (64 documents per call). slimcore's tokenizer
encodes through a cache of words (core/text/word_cache.py): every measurement starts with an empty
cache, and the default token count stays under one pass over the training share, so every
word's first encoding is paid inside the measurement, as on a corpus read once. Each rate
is the median of `--repeats` measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before `datasets` is imported

import torch  # noqa: E402
import zstandard  # noqa: E402

from slimcore.contracts.run import Run  # noqa: E402
from slimcore.testing import make_run as run_for  # noqa: E402
from slimcore.storage.cache import default_cache_dir  # noqa: E402
from slimcore.text.tokenizer import load_tokenizer, train_or_reuse  # noqa: E402
from slimcore_datasources.bundled import bundled_shards  # noqa: E402
from slimcore_datasources.chunk import ENCODE_GROUP, chunk_batches  # noqa: E402
from slimcore_datasources.corpus import (DocumentStream,  # noqa: E402
                                         training_documents)
from slimcore_datasources.files import corpus_files  # noqa: E402
from slimcore_datasources.sample import sample_batches  # noqa: E402


def make_run(path: str, seq_len: int = 1024, batch_size: int = 16) -> Run:
    raw = {"model": {"seq_len": seq_len}, "data": {"batch_size": batch_size},
           "corpus": {"path": path}, "tokenizer": {"vocab_size": 32000}}
    return run_for(raw)


def bundled_texts(run: Run) -> list[str]:
    return list(DocumentStream(run, "bundled", epochs=1))


def median_of(repeats: int, measure) -> float:
    """The median of `repeats` measurements: this machine's cores are shared and noisy."""
    return statistics.median(measure() for _ in range(repeats))


def encode_rate(encode, texts: list[str], min_tokens: int) -> float:
    """Tokens/s of `encode` over groups of documents: it returns ids per document (each
    counted with its BOS and EOS) or one tensor of the whole group, BOS and EOS included."""
    tokens, started = 0, time.perf_counter()
    for i in range(0, len(texts), ENCODE_GROUP):
        encoded = encode(texts[i:i + ENCODE_GROUP])
        tokens += len(encoded) if isinstance(encoded, torch.Tensor) else \
            sum(len(ids) + 2 for ids in encoded)
        if tokens >= min_tokens:
            break
    return tokens / (time.perf_counter() - started)


def source_rate(run: Run, kind: str, min_tokens: int) -> float:
    # The clock starts before the source exists: its start-up (opening the shards, filling
    # the shuffle buffer) is counted, and so is every token it encoded ahead, which a clock
    # started at the first batch would count as free.
    started = time.perf_counter()
    produce = {"chunk": chunk_batches, "sample": sample_batches}[kind]
    tokens = 0
    for batch, _ in produce(run, training_documents(run)):
        if kind == "chunk":
            tokens += batch.inputs.numel() + batch.inputs.shape[0]
        else:
            tokens += batch.target_count + batch.inputs.shape[0]
        if tokens >= min_tokens:
            break
    return tokens / (time.perf_counter() - started)


def synthetic_shards(folder: Path, count: int, words: list[str], docs_per_shard: int = 200):
    """SlimPajama-shaped shards of random word documents (~150 KB of text each)."""
    rng = random.Random(0)
    for i in range(count):
        lines = [json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(50, 250))),
                             "meta": {"redpajama_set_name": "RedPajamaC4"}})
                 for _ in range(docs_per_shard)]
        (folder / f"example_train_{i:03d}.jsonl.zst").write_bytes(
            zstandard.ZstdCompressor().compress("\n".join(lines).encode()))


def slimpajama_shaped(folder: Path, texts: list[str], shards: int = 3, docs_per_shard: int = 500,
                      book_share: float = 0.02) -> None:
    """Shards like SlimPajama's: documents of a few KB (log-normal around 3 KB) and, one in
    fifty, a book of 0.5 to 5 MB. Their text is real English, slices of the bundled corpus
    (the word cache sees a real vocabulary), spliced at random places."""
    rng = random.Random(1)
    whole = "\n".join(texts)

    def excerpt(chars: int) -> str:
        pieces, have = [], 0
        while have < chars:
            start = rng.randrange(len(whole) - 20_000)
            piece = whole[start:start + min(20_000, chars - have)]
            pieces.append(piece)
            have += len(piece)
        return "".join(pieces)

    for i in range(shards):
        lines = []
        for _ in range(docs_per_shard):
            book = rng.random() < book_share
            chars = rng.randint(500_000, 5_000_000) if book else \
                int(min(200_000, max(200, rng.lognormvariate(8.0, 0.9))))
            lines.append(json.dumps({"text": excerpt(chars), "meta": {
                "redpajama_set_name": "RedPajamaBook" if book else "RedPajamaC4"}}))
        (folder / f"example_train_{i:03d}.jsonl.zst").write_bytes(
            zstandard.ZstdCompressor().compress("\n".join(lines).encode()))


class PeakResident:
    """The peak resident memory (MiB) of this process while the block runs, sampled every
    20 ms on a thread (the kernel's own peak, ru_maxrss, never goes down between phases)."""

    def __enter__(self):
        self.peak, self.done = resident_mib(), threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.done.wait(0.02):
            self.peak = max(self.peak, resident_mib())

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, resident_mib())


def resident_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def memory_by_shard(tokenizer, texts: list[str], marks=(10, 100)) -> dict[int, float]:
    """Resident memory (MiB) when the chunk source's stream first reaches each shard mark."""
    words = sorted({w for t in texts[:50] for w in t.split()})
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_shards(Path(tmp), max(marks) + 1, words)
        run = make_run(tmp)
        run.tokenizer = tokenizer
        rss = {}
        for _, state in chunk_batches(run, training_documents(run)):
            shard = state["documents"]["positions"][0][1]  # the cursor: shards begun so far
            for mark in marks:
                if shard >= mark and mark not in rss:
                    rss[mark] = resident_mib()
            if len(rss) == len(marks):
                return rss
    raise RuntimeError("the stream ended before the last mark")


def tokens_source_rate(run: Run, texts: list[str], args) -> None:
    """The `tokens` source reading a nanoGPT-layout train.bin of the bundled corpus (encoded
    once, beforehand): tokens/s and peak resident memory, the same rows as `chunk` hands out
    (seq_len + 1 ids each)."""
    import numpy as np
    from slimcore_datasources.tokens import NAME, TokensConfig, TokensSource

    with tempfile.TemporaryDirectory() as tmp:
        ids = run.tokenizer.encode_documents(texts).numpy().astype(np.uint16)
        path = Path(tmp) / "train.bin"
        ids.tofile(path)
        run.config.plugin_sections[NAME] = TokensConfig(path=str(path))

        def measure():
            source, tokens, started = TokensSource(run), 0, time.perf_counter()
            while tokens < args.tokens:
                batch = next(source)
                tokens += batch.inputs.numel() + batch.inputs.shape[0]
            return tokens / (time.perf_counter() - started)

        with PeakResident() as peak:
            rate = median_of(args.repeats, measure)
        print(f"tokens source, a {len(ids) / 1e6:.1f}M-token train.bin: {rate / 1e6:.2f} M "
              f"tokens/s; peak resident {peak.peak:.0f} MiB")


def mixture_rates(shaped: Run, folder: str, tokenizer_path, args) -> None:
    """The chunk source on the SlimPajama-shaped corpus as one corpus and as mixtures
    (corpus.mixture): the whole corpus as a mixture's one component (the mixture's own cost),
    each shard a component of equal weight (about the same text as the one corpus), and its
    two set names reweighted (each component reads every shard and keeps its own records; the
    text is then other text: C4's short documents encode slower than books); tokens/s beside
    the single corpus, and the realised shares of the tokens against the weights."""
    import dataclasses

    from slimcore_datasources.config import MixtureComponent
    from slimcore_datasources.mixture import token_shares

    corpus = shaped.config.section("corpus")
    shards = sorted(Path(folder).glob("*.jsonl.zst"))
    mixtures = {
        "one corpus": {},
        "a mixture of it alone": {"all": MixtureComponent(weight=1)},
        f"{len(shards)} shards as components": {
            shard.name[:17]: MixtureComponent(weight=1, path=str(shard)) for shard in shards},
        "set names C4 0.7 / Book 0.3": {
            "c4": MixtureComponent(weight=0.7, set_names=["RedPajamaC4"]),
            "book": MixtureComponent(weight=0.3, set_names=["RedPajamaBook"])},
    }
    single = None
    for name, mixture in mixtures.items():
        shaped.config.plugin_sections["corpus"] = dataclasses.replace(corpus, mixture=mixture)
        shares = {}

        def measure():
            shaped.tokenizer = load_tokenizer(tokenizer_path)  # an empty word cache
            started, tokens, state = time.perf_counter(), 0, None
            for batch, state in chunk_batches(shaped, training_documents(shaped)):
                tokens += batch.inputs.numel() + batch.inputs.shape[0]
                if tokens >= args.tokens:
                    break
            shares.update(token_shares(state["documents"]) or {})
            return tokens / (time.perf_counter() - started)
        rate = median_of(args.repeats, measure)
        single = single or rate
        mix = ", ".join(f"{n} {s:.3f}" for n, s in sorted(shares.items()))
        print(f" chunk source, {name}: {rate / 1e6:.2f} M tokens/s = {rate / single:.2f} x one "
              f"corpus" + (f"; shares of the tokens: {mix}" if mix else ""))
    shaped.config.plugin_sections["corpus"] = corpus


def shared_shard_reading(folder: str, args) -> None:
    """One reader's share of a corpus whose shard count does not divide among the readers
    (8: 4 ranks x 2 corpus.workers, say): the SlimPajama-shaped shards copied to 9, and the
    3 alone. Read under the first plan (every reader read every shard, parsing every record,
    keeping 1 in 8), the second (1 whole shard each, then 1 in 8 of the one left over, only
    those parsed; with 3 shards, 1 in 8 of each) and the current one (with 3 shards, one
    shard each, 1 record in 3 or 2 of it): seconds to read the share, documents only (no
    tokenizing), median of --repeats."""
    import shutil

    with tempfile.TemporaryDirectory() as nine:
        for copy in range(3):
            for shard in sorted(Path(folder).glob("*.jsonl.zst")):
                shutil.copy(shard, Path(nine) / f"{copy}_{shard.name}")
        for corpus, shards in ((nine, 9), (folder, 3)):
            def read(version: int) -> tuple[float, int]:
                run = run_for({"corpus": {"path": corpus, "shuffle_buffer": 0}}, world_size=8)
                stream = DocumentStream(run, corpus, epochs=1)
                stream.plan_version = version
                started = time.perf_counter()
                count = sum(1 for _ in stream)
                return time.perf_counter() - started, count

            timings = {version: median_of(args.repeats, lambda: read(version)[0])
                       for version in (1, 2, 3)}
            print(f" one reader of 8 on {shards} shards ({read(3)[1]} documents of its "
                  f"share): first plan {timings[1]:.2f} s, second {timings[2]:.2f} s, now "
                  f"{timings[3]:.2f} s = {timings[1] / timings[3]:.1f}x and "
                  f"{timings[2] / timings[3]:.1f}x faster")


def token_cache_rates(shaped: Run, tokenizer_path, args) -> None:
    """The chunk source with corpus.token_cache on the SlimPajama-shaped corpus, beside the
    same source without it: while its first pass writes each shard's tokens, and in a later
    run that reads the cache alone; tokens/s and peak resident memory."""
    import dataclasses

    corpus, saved_cache_dir = shaped.config.section("corpus"), shaped.config.tokenizer.cache_dir

    def measure(cached: bool, tokens: int) -> tuple[float, float]:
        shaped.config.plugin_sections["corpus"] = dataclasses.replace(corpus, token_cache=cached)
        shaped.tokenizer = load_tokenizer(tokenizer_path)  # an empty word cache
        with PeakResident() as peak:
            rate = source_rate(shaped, "chunk", tokens)
        return rate, peak.peak

    with tempfile.TemporaryDirectory() as cache:
        shaped.config.tokenizer.cache_dir = cache
        plain, _ = measure(False, args.tokens)
        writing, _ = measure(True, args.tokens)
        shards = len(corpus_files(corpus.path, None))
        while len(list(Path(cache).glob("tokens/*/*.json"))) < shards:
            measure(True, 10 * args.tokens)  # passes until every shard is cached (untimed)
        cached, peak = measure(True, max(args.tokens, 20_000_000))
        files = list(Path(cache).glob("tokens/*/*.bin"))
        size = sum(f.stat().st_size for f in files) / 1e6
    print(f" chunk source, token cache: writing {writing / 1e6:.2f} M tokens/s = "
          f"{writing / plain:.2f} x without; reading {cached / 1e6:.2f} M tokens/s = "
          f"{cached / plain:.1f} x without, peak resident {peak:.0f} MiB ({len(files)} shards, "
          f"{size:.1f} MB)")
    shaped.config.plugin_sections["corpus"] = corpus
    shaped.config.tokenizer.cache_dir = saved_cache_dir


def json_tokenizer_rates(sentencepiece, texts: list[str], args, bare: float) -> None:
    """A model continued from a folder with a tokenizer.json encodes through the tokenizers
    library (core/text/json_tokenizer.py): the same SentencePiece model as the hf export
    writes it (the same ids), and a byte-level BPE trained here (SmolLM's and Llama 3's
    kind), each through slimcore's encode_documents."""
    from slimcore.text.json_tokenizer import JsonTokenizer, envelope
    from slimcore_checkpointers.hf_export import tokenizer_json
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    metaspace = json.dumps(tokenizer_json(sentencepiece.processor))
    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    byte_level.decoder = decoders.ByteLevel()
    byte_level.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=32000, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    for name, pipeline in (("SentencePiece's as tokenizer.json", metaspace),
                           ("byte-level BPE tokenizer.json", byte_level.to_str())):
        tokenizer = JsonTokenizer(envelope(pipeline, 1, 2), "bench")
        rate = median_of(args.repeats, lambda: encode_rate(tokenizer.encode_documents, texts,
                                                           args.tokens))
        print(f"tokenizers library, {name}: {rate / 1e6:.2f} M tokens/s = "
              f"{rate / bare:.2f} x bare SentencePiece")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["shared-shards"],
                        help="only one reader's share of shards that do not divide")
    args = parser.parse_args()
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cores]))
    torch.set_num_threads(args.cores)

    run = make_run("bundled")
    bundled_shards(default_cache_dir())
    texts = bundled_texts(run)
    if args.only == "shared-shards":
        with tempfile.TemporaryDirectory() as tmp:
            slimpajama_shaped(Path(tmp), texts)
            shared_shard_reading(tmp, args)
        return
    run.tokenizer = train_or_reuse(run.config.tokenizer, texts, log=lambda _: None)
    print(f"corpus: bundled, {len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f} MB; "
          f"tokenizer vocab {run.tokenizer.vocab_size}; {args.cores} core(s); "
          f"torch {torch.__version__}, python {sys.version.split()[0]}")
    path = run.tokenizer.path
    bare = median_of(args.repeats,
                     lambda: encode_rate(run.tokenizer.processor.encode, texts, args.tokens))
    print(f"bare SentencePiece encode: {bare / 1e6:.2f} M tokens/s")
    tokenizers = []

    def cached_encode_rate():
        tokenizers.append(load_tokenizer(path))  # an empty word cache for each measurement
        return encode_rate(tokenizers[-1].encode_documents, texts, args.tokens)
    rate = median_of(args.repeats, cached_encode_rate)
    cache = tokenizers[-1].word_cache
    print(f"slimcore tokenizer encode: {rate / 1e6:.2f} M tokens/s = {rate / bare:.2f} x bare "
          f"(word cache from empty: {cache.lookups:,} words, {cache.misses:,} encoded by "
          f"SentencePiece, {1 - cache.misses / cache.lookups:.1%} hits)")
    tokens_source_rate(run, texts, args)
    json_tokenizer_rates(run.tokenizer, texts, args, bare)
    with tempfile.TemporaryDirectory() as tmp:
        slimpajama_shaped(Path(tmp), texts)
        shaped = make_run(tmp)
        shaped_texts = list(DocumentStream(shaped, tmp, epochs=1))
        print(f"corpus: SlimPajama-shaped, {len(shaped_texts)} documents after cutting at "
              f"corpus.max_document_chars, {sum(map(len, shaped_texts)) / 1e6:.1f} MB; the "
              "same tokenizer")
        shaped_bare = median_of(args.repeats, lambda: encode_rate(
            run.tokenizer.processor.encode, shaped_texts, args.tokens))
        shaped_texts.clear()  # not held while the sources are measured
        print(f"bare SentencePiece encode, SlimPajama-shaped: {shaped_bare / 1e6:.2f} M tokens/s")
        for corpus, source_run, bare_rate in (("bundled", run, bare),
                                              ("SlimPajama-shaped", shaped, shaped_bare)):
            for kind in ("chunk", "sample"):
                peaks = []

                def measure():
                    # an empty word cache for each measurement
                    source_run.tokenizer = load_tokenizer(path)
                    with PeakResident() as peak:
                        rate = source_rate(source_run, kind, args.tokens)
                    peaks.append(peak.peak)
                    return rate
                rate = median_of(args.repeats, measure)
                print(f"{kind:>6} source, {corpus}: {rate / 1e6:.2f} M tokens/s = "
                      f"{rate / bare_rate:.2f} x bare; peak resident {max(peaks):.0f} MiB")
        mixture_rates(shaped, tmp, path, args)
        token_cache_rates(shaped, path, args)
        shared_shard_reading(tmp, args)
    rss = memory_by_shard(run.tokenizer, texts)
    print("resident memory of the chunk source's process: "
          + ", ".join(f"{rss[m]:.0f} MiB at shard {m}" for m in sorted(rss))
          + f" (ratio {rss[100] / rss[10]:.2f})")


if __name__ == "__main__":
    main()
