"""Runs under torchrun: 2 processes on the CPU with gloo, through the real CLI.

The global batch of 2 ranks x 2 rows must train exactly like one process with 4 rows: with
one shard for two ranks, rank 0 reads documents 0, 2, 4... and rank 1 documents 1, 3, 5...,
so together they see what a single process reads, step by step."""

import json
import re
import subprocess
import sys
import time

import pytest
import zstandard

from conftest import REPO, run_in_process

DOCS = [f"Paragraph {i}: " + " ".join(f"word{(i * 7 + j) % 23}" for j in range(i % 13 + 20))
        for i in range(400)]


def torchrun(config, *args, env=None, timeout=240, launcher=()):
    import os

    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         *launcher, "-m", "slimcore", "run", str(config), *args],
        capture_output=True, text=True, cwd=REPO, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def history(folder):
    records = json.loads((folder / "training_viz" / "metrics_history.json").read_text())
    return {m["step"]: m for m in records}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl.zst"
    lines = "\n".join(json.dumps({"text": d}) for d in DOCS)
    path.write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    return path


@pytest.mark.slow  # four 2-process jobs and three runs: the slow tier
def test_two_ranks_train_as_one_process_and_resume(write_config, tmp_path, corpus, capsys):
    settings = {"run": {"steps": 4}, "intervals": {"checkpoint": 2}, "json_export": {"every": 2},
                "data": {"source": "sample", "batch_size": 2},
                "corpus": {"path": str(corpus), "shuffle_buffer": 0},
                "tokenizer": {"vocab_size": 300, "train_documents": 100},
                # flat after warmup: a run of 4 steps then 6 follows the rates of one of 6
                "schedule": {"warmup_steps": 2, "min_lr_ratio": 1.0}}
    ddp = torchrun(write_config({**settings, "output": {"dir": str(tmp_path / "ddp")}}, "ddp"))
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-3000:]
    # One set of outputs: one progress line per step, one history, rank 0's checkpoints.
    assert ddp.stdout.count("step 3/4 ") == 1
    assert ("1 shards do not divide evenly among 2 ranks x 1 corpus.workers: each reader "
            "reads 0 whole, then 1 record in 2 of one of the 1 left over, which its 2 readers "
            "each decompress") in ddp.stderr
    assert "distributed: parameters identical on 2 ranks" in ddp.stdout
    two_ranks = history(tmp_path / "ddp")
    assert sorted(two_ranks) == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").glob("*.bin")) == \
        ["checkpoint_step_2.bin", "checkpoint_step_4.bin"]

    single = {**settings, "data": {**settings["data"], "batch_size": 4},
              "output": {"dir": str(tmp_path / "single")}}
    run_in_process(write_config(single, "single"))
    one_rank = history(tmp_path / "single")
    for step in range(1, 5):
        assert two_ranks[step]["loss"] == pytest.approx(one_rank[step]["loss"], rel=1e-5)
        assert two_ranks[step]["accuracy"] == pytest.approx(one_rank[step]["accuracy"])
        assert two_ranks[step]["tokens_seen"] == one_rank[step]["tokens_seen"]

    # Resume the 2-rank checkpoint with 2 ranks: steps 3 and 4 as in the straight run.
    resumed = torchrun(write_config({**settings, "output": {"dir": str(tmp_path / "again")}},
                                    "again"),
                       "--resume", str(tmp_path / "ddp" / "checkpoints" / "checkpoint_step_2.bin"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = history(tmp_path / "again")
    assert sorted(again) == [3, 4]
    assert [again[s]["loss"] for s in (3, 4)] == pytest.approx(
        [two_ranks[s]["loss"] for s in (3, 4)], rel=1e-6)

    # DDP resumes with another world size too; the data position cannot carry over.
    run_in_process(write_config({**single, "output": {"dir": str(tmp_path / "alone")}},
                                "alone"),
                   resume=str(tmp_path / "ddp" / "checkpoints" / "checkpoint_step_2.bin"))
    assert "saved by 2 ranks and this job has 1" in capsys.readouterr().err
    assert sorted(history(tmp_path / "alone")) == [3, 4]
    # That replayed run saves its own position again: resumed once more, it reads on from
    # there (no second replay) exactly as a run that never stopped after its replay.
    from slimcore_checkpointers.three_file import read_checkpoint

    resaved = tmp_path / "alone" / "checkpoints" / "checkpoint_step_4.bin"
    assert read_checkpoint(resaved).data_state["world_size"] == 1
    run_in_process(write_config({**single, "run": {"steps": 6}}, "alone"), resume="auto",
                   overrides=[f"output.dir={tmp_path / 'alone'}"])
    assert "replaying" not in capsys.readouterr().err
    run_in_process(write_config({**single, "run": {"steps": 6},
                                 "output": {"dir": str(tmp_path / "through")}}, "through"),
                   resume=str(tmp_path / "ddp" / "checkpoints" / "checkpoint_step_2.bin"))
    through, twice = history(tmp_path / "through"), history(tmp_path / "alone")
    assert sorted(twice) == [3, 4, 5, 6]
    assert [twice[s]["loss"] for s in (5, 6)] == [through[s]["loss"] for s in (5, 6)]


@pytest.mark.slow  # three 2-process jobs and their resumes: the slow tier
@pytest.mark.parametrize("strategy, optimizer", [("fsdp", "adamw"), ("fsdp", "muon"),
                                                 ("ddp", "muon")])
def test_sharded_and_replicated_ranks_train_like_one_process(write_config, tmp_path, corpus,
                                                             strategy, optimizer):
    """Under FSDP each rank holds half of every matrix: Muon gathers a matrix's update to
    orthogonalise it whole. Each trains as one process does, to float32's reduction order
    (1e-5), and a resume at the same size continues bit for bit from the gathered
    checkpoint."""
    settings = {"run": {"steps": 3}, "intervals": {"checkpoint": 2},
                "optimizer": {"name": optimizer},
                "data": {"source": "sample", "batch_size": 2},
                "corpus": {"path": str(corpus), "shuffle_buffer": 0},
                "tokenizer": {"vocab_size": 300, "train_documents": 100},
                "distributed": {"strategy": strategy}, "model": {"activation_checkpointing": True},
                "output": {"dir": str(tmp_path / "fsdp")}}
    fsdp = torchrun(write_config(settings, "fsdp"))
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    single = {**settings, "data": {**settings["data"], "batch_size": 4},
              "distributed": None, "output": {"dir": str(tmp_path / "single")}}
    run_in_process(write_config(single, "single"))
    sharded, one_rank = history(tmp_path / "fsdp"), history(tmp_path / "single")
    assert [sharded[s]["loss"] for s in (1, 2, 3)] == pytest.approx(
        [one_rank[s]["loss"] for s in (1, 2, 3)], rel=1e-5)
    assert sharded[3]["loss"] < sharded[1]["loss"]
    # The checkpoint holds the whole model, gathered from both shards.
    from slimcore_checkpointers.three_file import read_checkpoint

    saved = read_checkpoint(tmp_path / "fsdp" / "checkpoints" / "checkpoint_step_3.bin")
    assert saved.model["embed.weight"].shape[0] == 300
    assert len(saved.optimizer["state"]) == len(saved.model)
    resumed = torchrun(write_config({**settings, "output": {"dir": str(tmp_path / "again")}},
                                    "again"),
                       "--resume", str(tmp_path / "fsdp" / "checkpoints" / "checkpoint_step_2.bin"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert history(tmp_path / "again")[3]["loss"] == sharded[3]["loss"]


# a SIGSTOPped rank outlives torchrun's SIGTERM: its 30 s grace passes before the SIGKILL
@pytest.mark.parametrize("fault, monitor", [
    ("exit", "5"), ("kill", "5"), ("kill", "0.1"),
    pytest.param("hang", "5", marks=pytest.mark.slow),  # waits out distributed.timeout_s
    pytest.param("stop", "5", marks=pytest.mark.slow)])
def test_a_rank_that_dies_or_hangs_ends_the_job_with_a_line(write_config, tmp_path,
                                                             installed_plugins, fault, monitor):
    """Rank 1 exits, is SIGKILLed, is SIGSTOPped or hangs in its data at batch 3: rank 0
    gives up with one line that names rank 1 (its heartbeat stopped, or it is in another
    collective than rank 0), also under torchrun's default monitor (0.1 s), which SIGTERMs
    rank 0 as soon as it sees rank 1 gone."""
    config = write_config({"run": {"steps": 200}, "data": {"source": "counting"},
                           "distributed": {"timeout_s": 8}})
    started = time.monotonic()
    # torchrun SIGTERMs the other ranks as soon as it sees one exit (every 0.1 s by default):
    # a few seconds let rank 0, slowed by a loaded machine, see the dead peer itself first.
    result = torchrun(config, env={**installed_plugins, "COUNTING_FAULT": f"{fault}:1:3"},
                      timeout=120, launcher=("--monitor-interval", monitor))
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert f"rank 1: {fault} at batch 3" in result.stdout
    assert "distributed: rank 0 of 2 gave up waiting for the other ranks (step 3" in \
        result.stderr, result.stderr[-3000:]
    blamed = "; rank 1 is alive but elsewhere (hung, or behind), in step 2: " \
        if fault == "hang" else "; rank 1 stopped beating (dead, killed or stopped), last seen"
    assert blamed in result.stderr, result.stderr[-3000:]
    assert elapsed < 60


# `slimcore run` under torchrun, writing the rank's peak resident memory as it leaves (a
# torchrun worker leaves through os._exit, past atexit).
PEAK_WRAPPER = """
import os, resource, sys
from pathlib import Path
from slimcore.commands.cli import main

leave = os._exit


def note_the_peak_and_leave(code):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    Path(os.environ["PEAK_DIR"], "rank" + os.environ["RANK"]).write_text(str(peak))
    leave(code)


os._exit = note_the_peak_and_leave
note_the_peak_and_leave(main(sys.argv[1:]))
"""


def peaks_of_a_job(config, folder, *args):
    """Each rank's peak resident memory (KiB) over a torchrun job of `slimcore run`."""
    import os

    folder.mkdir()
    wrapper = folder / "peak.py"
    wrapper.write_text(PEAK_WRAPPER)
    job = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(wrapper), "run", str(config), *args], capture_output=True, text=True, cwd=REPO,
        timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "PEAK_DIR": str(folder)})
    assert job.returncode == 0, job.stderr[-3000:]
    return [int((folder / f"rank{rank}").read_text()) for rank in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_resume_then_a_save_costs_no_more_memory_than_a_fresh_run(write_config, tmp_path,
                                                                    corpus, strategy):
    """A 14M-parameter model, its checkpoint about 170 MB: resumed at step 2 and saved at 4,
    no rank peaks above 1.3x its peak in the same job from step 0 (restored tensors owned
    whole views of the file they came from: a data position kept for the run, or an Adam
    step counter, kept all of it alive, and gathering positions pickled it per rank)."""
    settings = {"run": {"steps": 4}, "intervals": {"checkpoint": 2},
                "data": {"source": "chunk", "batch_size": 2},
                "corpus": {"path": str(corpus), "shuffle_buffer": 0},
                "tokenizer": {"vocab_size": 300, "train_documents": 100},
                "model": {"width": 384, "layers": 6, "heads": 6, "mlp_hidden": 1536,
                          "seq_len": 64},
                "distributed": {"strategy": strategy},
                "checkpoint": {"async": False}, "output": {"dir": str(tmp_path / "run")}}
    config = write_config(settings, "big")
    fresh = peaks_of_a_job(config, tmp_path / "fresh")
    resumed = peaks_of_a_job(config, tmp_path / "resumed", "--resume",
                             str(tmp_path / "run" / "checkpoints" / "checkpoint_step_2.bin"),
                             "--overwrite")
    print(f"{strategy} peak KiB per rank: fresh {fresh}, resumed then saved {resumed}")
    for rank in (0, 1):
        assert resumed[rank] <= 1.3 * fresh[rank], (rank, fresh, resumed)


def test_nodes_that_do_not_share_the_output_folder_stop_with_one_line(write_config, tmp_path,
                                                                      corpus):
    """Two "nodes" on 127.0.0.1 (a torchrun each, static rendezvous), the second given an
    output folder of its own, as a node without the shared filesystem would have: every rank
    stops before any work with one line naming the rank that cannot see rank 0's folder."""
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config({"run": {"steps": 2}, "data": {"source": "sample", "batch_size": 2},
                           "corpus": {"path": str(corpus), "shuffle_buffer": 0},
                           "tokenizer": {"vocab_size": 300, "train_documents": 100}})
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank",
         str(node), "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port",
         str(port), "-m", "slimcore", "run", str(config),
         "--output-dir", str(tmp_path / ("shared" if node == 0 else "its-own"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"}) for node in (0, 1)]
    outcomes = [node.communicate(timeout=240) for node in nodes]
    line = (f"slimcore: error: output.dir: rank 1 on {socket.gethostname()} "
            f"({tmp_path / 'its-own'}) cannot see the output folder rank 0 locked "
            f"({tmp_path / 'shared'} on {socket.gethostname()}); every node must reach the same "
            "folder (a shared filesystem), or each would save and resume its own")
    for node, (_, stderr) in zip(nodes, outcomes):
        assert node.returncode == 1  # torchrun's, its summary giving the rank's own status
        assert line in stderr.splitlines(), stderr[-3000:]
        assert re.search(r"exitcode\s*: 2\b", stderr), stderr[-3000:]
    assert not (tmp_path / "shared" / "history").exists()


def sigterm_after_step(config, step: int, env: dict) -> tuple[int, str]:
    """A 2-rank torchrun job of `config` (its batches 0.05 s apart), SIGTERMed once it has
    printed step `step`: torchrun's exit status and its stderr."""
    import os
    import signal

    job = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "slimcore", "run", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO, env={**os.environ, **env, "OMP_NUM_THREADS": "1",
                                  "COUNTING_PAUSE_S": "0.05"})
    deadline = time.monotonic() + 120
    for line in job.stdout:
        if line.startswith(f"step {step}/") or time.monotonic() > deadline:
            break
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=120)
    return job.returncode, stderr


def test_sigterm_to_torchrun_saves_and_says_the_torchrun_command_to_go_on(
        write_config, tmp_path, installed_plugins):
    """torchrun forwards SIGTERM: every rank stops after the same step, rank 0 saves, and the
    line to go on is a torchrun command of the job's shape. torchrun itself then exits 1 with
    a traceback of its own (SignalException), as the README says."""
    config = write_config({"run": {"steps": 500}, "data": {"source": "counting"},
                           "intervals": {"checkpoint": 1000}})
    returncode, stderr = sigterm_after_step(config, 3, installed_plugins)
    assert returncode == 1, (returncode, stderr[-3000:])
    assert f"go on with: torchrun --standalone --nproc-per-node 2 -m slimcore run {config} " \
           "--resume auto" in stderr, stderr[-3000:]
    assert "SignalException" in stderr  # torchrun's, documented
    saved = list((tmp_path / "out" / "checkpoints").glob("checkpoint_step_*.bin"))
    assert len(saved) == 1


@pytest.mark.slow  # torchrun restarting a 2-process job: the slow tier
@pytest.mark.parametrize("checkpointer", ["three_file", "sharded"])
def test_max_restarts_with_resume_auto_recovers_a_killed_rank(write_config, tmp_path,
                                                              installed_plugins, checkpointer):
    """`torchrun --max-restarts 2 ... --resume auto`: rank 1 SIGKILLed at step 6, torchrun
    starts the job again, which resumes from the newest whole checkpoint and ends with the
    losses of a job that was never killed. The restarted ranks start gloo at once (they read the
    dead ranks' addresses from torchrun's store, and failed, before their keys were named
    by attempt)."""
    settings = {"run": {"steps": 8}, "data": {"source": "counting"},
                "intervals": {"checkpoint": 2}, "distributed": {"timeout_s": 20},
                "checkpoint": {"checkpointer": checkpointer}}
    straight = torchrun(write_config({**settings, "output": {"dir": str(tmp_path / "straight")}},
                                     "straight"), "--resume", "auto", env=installed_plugins)
    assert straight.returncode == 0, straight.stderr[-3000:]
    marker = tmp_path / "killed-once"
    restarted = torchrun(
        write_config({**settings, "output": {"dir": str(tmp_path / "restarted")}}, "restarted"),
        "--resume", "auto", launcher=("--max-restarts", "2"), timeout=400,
        env={**installed_plugins, "COUNTING_FAULT": "kill:1:6",
             "COUNTING_FAULT_ONCE": str(marker)})
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert marker.exists() and "rank 1: kill at batch 6" in restarted.stdout
    assert "connectFullMesh" not in restarted.stderr  # the next attempt's gloo starts
    # Under three_file rank 0 alone writes, so the step-4 save outlives rank 1. A sharded
    # save needs every rank: one still in flight when rank 1 dies is lost (never committed),
    # and the job goes on from the set before.
    steps = "4" if checkpointer == "three_file" else "[24]"
    assert re.search(f"resume: continuing from step {steps}\\b", restarted.stdout)
    expected, got = history(tmp_path / "straight"), history(tmp_path / "restarted")
    assert sorted(got) == list(range(1, 9))
    assert [got[s]["loss"] for s in range(1, 9)] == [expected[s]["loss"] for s in range(1, 9)]


@pytest.mark.slow  # two 2-process jobs: the slow tier
def test_two_ranks_mix_two_corpora_through_one_shared_token_cache(write_config, tmp_path):
    """A 2 : 1 mixture of two corpora of 8 shards, 2 ranks, each rank's shards kept in one
    token cache folder both ranks share, documents kept apart: a second job, reading the
    cache its first left, trains the same losses, and the mix is in its history."""
    components = {}
    for name, docs in (("even", DOCS[0::2]), ("odd", DOCS[1::2])):
        folder = tmp_path / name
        folder.mkdir()
        for shard in range(8):  # 25 documents each
            lines = "\n".join(json.dumps({"text": d}) for d in docs[shard::8])
            (folder / f"{name}_{shard}.jsonl.zst").write_bytes(
                zstandard.ZstdCompressor().compress(lines.encode()))
        components[name] = {"path": str(folder), "weight": 2 if name == "even" else 1}
    settings = {"run": {"steps": 6}, "json_export": {"every": 2}, "eval": {"interval": 0},
                "data": {"batch_size": 2, "document_mask": True},
                "corpus": {"mixture": components, "token_cache": True, "shuffle_buffer": 4},
                "chunk": {"tokens_per_chunk": 4096},  # ~100 documents: whole shards
                "tokenizer": {"vocab_size": 300, "train_documents": 100,
                              "cache_dir": str(tmp_path / "cache")}}
    runs = []
    for name in ("first", "second"):
        config = write_config({**settings, "output": {"dir": str(tmp_path / name)}}, name)
        job = torchrun(config)
        assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
        runs.append(history(tmp_path / name))
    assert [runs[1][s]["loss"] for s in range(1, 7)] == [runs[0][s]["loss"] for s in range(1, 7)]
    shares = runs[1][6]["data_shares"]
    assert set(shares) == {"even", "odd"} and 0.5 < shares["even"] < 0.85
    cached = list((tmp_path / "cache").glob("tokens/*/*.json"))
    assert cached, "the first job committed shards to the shared cache"
    assert not list((tmp_path / "cache").glob("tokens/*/*.partial*"))



@pytest.mark.slow  # three 2-process jobs of a 34M-parameter model: the slow tier
def test_a_model_too_large_for_one_rank_trains_sharded_on_two(write_config, tmp_path, corpus):
    """A 34M-parameter model needs 0.51 GiB for weights, gradients and AdamW state; under a
    test budget of 0.40 GiB a rank (SLIMCORE_TEST_MEMORY_BYTES) one process is refused
    before it builds anything, and FSDP on 2 ranks trains it: each rank builds its half on
    the meta device and never holds the whole, so its peak stays at least 0.3 x the whole
    below DDP's on the same model (a replica each), checkpoint included: the sharded
    checkpointer has each rank write its own share, nothing gathered."""
    import os

    from slimcore.config.schema import ModelSection
    from slimcore.launch.preparation import TRAINING_BYTES_PER_PARAMETER
    from slimcore.model.gpt import parameter_count

    shape = {"width": 512, "layers": 8, "heads": 8, "mlp_hidden": 2048, "seq_len": 64}
    parameters = parameter_count(ModelSection(**shape), 300)  # the tokenizer's vocabulary
    settings = {"run": {"steps": 3}, "data": {"source": "chunk", "batch_size": 2},
                "corpus": {"path": str(corpus), "shuffle_buffer": 0},
                "tokenizer": {"vocab_size": 300, "train_documents": 100},
                "model": shape, "checkpoint": {"checkpointer": "sharded"},
                "eval": {"interval": 0}}
    budget = {"SLIMCORE_TEST_MEMORY_BYTES": str(int(0.40 * 2**30))}
    alone = subprocess.run([sys.executable, "-m", "slimcore", "run", str(write_config(
        {**settings, "output": {"dir": str(tmp_path / "alone")}}, "alone"))],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **budget}, timeout=300)
    assert alone.returncode == 2, alone.stderr[-2000:]
    assert f"model: {parameters:,} parameters need 0.5" in alone.stderr and \
        "a rank has 0.40 GiB of cpu memory" in alone.stderr, alone.stderr[-2000:]
    peaks = {}
    # glibc keeps freed heap memory resident (its mmap threshold rises to 32 MB as blocks
    # are freed): fixed, the resident peak follows the live bytes
    allocator = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    for strategy in ("fsdp", "ddp"):
        config = write_config({**settings, "distributed": {"strategy": strategy},
                               "output": {"dir": str(tmp_path / strategy)}}, strategy)
        os.environ.update({**allocator, **(budget if strategy == "fsdp" else {})})
        try:
            peaks[strategy] = peaks_of_a_job(config, tmp_path / f"peaks-{strategy}")
        finally:
            for key in ("SLIMCORE_TEST_MEMORY_BYTES", "MALLOC_MMAP_THRESHOLD_"):
                os.environ.pop(key, None)
    whole = parameters * TRAINING_BYTES_PER_PARAMETER / 1024  # KiB: weights, grads, AdamW
    print(f"peak KiB per rank: fsdp {peaks['fsdp']}, ddp {peaks['ddp']}")
    for rank in (0, 1):
        assert peaks["fsdp"][rank] < peaks["ddp"][rank] - 0.3 * whole, peaks
    # It checkpointed (the end of the run), each rank writing its own share.
    saved = tmp_path / "fsdp" / "checkpoints" / "sharded_step_3"
    assert {p.name for p in saved.iterdir()} >= {"__0_0.distcp", "__1_0.distcp", "record.bin"}
