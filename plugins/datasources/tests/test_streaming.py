"""Streaming over real HTTP from a server on 127.0.0.1 that this test starts: normal
shards, a server that stalls, a server that drops the connection mid-shard."""

import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

import pytest
import torch
import zstandard
from conftest import run_cli

from slimcore import UserError
from slimcore.testing import make_run as run_for
from slimcore_datasources.corpus import DocumentStream, first_documents

SETS = ["RedPajamaBook", "RedPajamaArXiv", "RedPajamaC4"]


def text(i: int) -> str:
    # Incompressible, so a shard is tens of kilobytes and a drop lands mid-stream.
    return f"document {i} " + "".join(hashlib.sha256(f"{i}.{j}".encode()).hexdigest()
                                       for j in range(40))


def shard(first: int, count: int) -> bytes:
    lines = [json.dumps({"text": text(i),
                         "meta": {"redpajama_set_name": SETS[i % 3]}})
             for i in range(first, first + count)]
    return zstandard.ZstdCompressor().compress("\n".join(lines).encode())


SHARDS = {"/example_train_0.jsonl.zst": shard(0, 40), "/example_train_1.jsonl.zst": shard(40, 40)}
EXPECTED = [text(i) for i in range(80)]
# For a run that trains a while on short documents before its stream stalls for good.
SHORT = "\n".join(json.dumps({"text": f"document {i} " + hashlib.sha256(str(i).encode())
                              .hexdigest()[:40]}) for i in range(150))
SHARDS["/short.jsonl.zst"] = zstandard.ZstdCompressor().compress(SHORT.encode())
SHARDS["/never.jsonl.zst"] = SHARDS["/short.jsonl.zst"]  # always stalls


class ShardServer(http.server.ThreadingHTTPServer):
    """mode: normal | stall (headers, half the body, then silence) | drop (the first
    DROPS requests of the first shard get half the body, then the connection closes;
    `datasets` makes a request or two of its own before iterating, so one drop alone might
    only hit those)."""

    DROPS = 3

    daemon_threads = True

    def __init__(self, mode):
        super().__init__(("127.0.0.1", 0), ShardHandler)
        self.mode = mode
        self.requests: list[str] = []
        self.release = threading.Event()


class ShardHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._respond(body=False)

    def do_GET(self):
        self._respond(body=True)

    def _respond(self, body):
        data = SHARDS.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not body:
            return
        server = self.server
        server.requests.append(self.path)
        dropping = (self.path == "/example_train_0.jsonl.zst"
                    and server.requests.count(self.path) <= server.DROPS)
        stalling = server.mode == "stall" or self.path == "/never.jsonl.zst"
        if not stalling and (server.mode == "normal" or not dropping):
            self.wfile.write(data)
            return
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if stalling:
            server.release.wait(60)  # silence, until the test ends
        self.close_connection = True


@pytest.fixture
def server(request):
    srv = ShardServer(request.param)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()


def make_run(srv, tokenizer=None, **data):
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    raw = {"model": {"width": 16, "heads": 2, "seq_len": 16}, "data": {"batch_size": 2},
           "corpus": {"path": f"{base}/example_train_0.jsonl.zst,{base}/example_train_1.jsonl.zst",
                      **data}}
    return run_for(raw, tokenizer=tokenizer)


@pytest.mark.parametrize("server", ["normal"], indirect=True)
def test_streams_every_document_in_order(server):
    assert first_documents(make_run(server), 1000) == EXPECTED


@pytest.mark.parametrize("server", ["normal"], indirect=True)
def test_filter_on_set_names(server):
    docs = first_documents(make_run(server, set_names=["RedPajamaBook", "RedPajamaC4"]), 1000)
    assert docs == [d for i, d in enumerate(EXPECTED) if i % 3 != 1]
    with pytest.raises(UserError, match="holds no documents of corpus.set_names"):
        first_documents(make_run(server, set_names=["RedPajamaGithub"]), 1)


@pytest.mark.parametrize("server", ["drop"], indirect=True)
def test_dropped_connection_is_retried_without_loss_or_duplicates(server, capsys):
    run = make_run(server, timeout_s=10, max_retries=3, retry_backoff_s=0.05)
    assert first_documents(run, 1000) == EXPECTED
    assert "retry 1/3 in 0.05 s from epoch 0, shard 0 of this reader, record 0" in \
        capsys.readouterr().err
    assert server.requests.count("/example_train_0.jsonl.zst") > ShardServer.DROPS


@pytest.mark.parametrize("server", ["stall"], indirect=True)
def test_stalled_server_fails_cleanly_within_the_configured_time(server):
    run = make_run(server, timeout_s=1, max_retries=2, retry_backoff_s=0.1)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"stopped delivering after \d+ records \(StreamStalled: "
                                        r"no record within 1 s; 2 retries"):
        list(DocumentStream(run, run.config.section("corpus").path, epochs=1))
    # 3 waits of 1 s, backoffs of 0.1 and 0.2 s, and the start-up of each attempt.
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("server", ["normal"], indirect=True)
def test_a_run_whose_stream_gives_up_keeps_its_last_step(server, write_config, tmp_path):
    """Training goes on while documents come; when the stream stalls for good the run
    saves its last step and exits 3 with one line, within the configured time."""
    base = f"http://127.0.0.1:{server.server_address[1]}"
    config = write_config({"run": {"steps": 500},
                           "corpus": {"path": f"{base}/short.jsonl.zst,{base}/never.jsonl.zst",
                                      "shuffle_buffer": 0, "timeout_s": 1, "max_retries": 1,
                                      "retry_backoff_s": 0.1},
                           "tokenizer": {"vocab_size": 300}})
    started = time.monotonic()
    result = run_cli("run", str(config))
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 120
    message = result.stderr.strip().splitlines()[-1]
    assert "stopped delivering after" in message and "resume with --resume auto" in message
    last = json.loads((tmp_path / "out" / "training_viz" / "metrics_history.json")
                      .read_text())[-1]["step"]
    assert 0 < last < 500
    assert f"step {last} is saved in" in message
    assert (tmp_path / "out" / "checkpoints" / f"checkpoint_step_{last}.bin").is_file()
