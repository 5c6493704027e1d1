"""The suite stays home: no connection or name lookup past loopback, in this process or any it
starts, and no file outside the test's own folders (a HOME of its own; a run without an
output folder writes into the sandbox, never into the checkout)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SANDBOX, guarded, run_cli

LOG = Path(os.environ["SLIMCORE_TEST_NETWORK_LOG"])


@pytest.fixture
def guard_log():
    """What the guard logs during the test, taken back out after (the guard's own tests
    reach out on purpose)."""
    before = LOG.read_text() if LOG.exists() else ""
    yield lambda: (LOG.read_text() if LOG.exists() else "")[len(before):]
    LOG.write_text(before)


def test_a_connection_past_loopback_is_refused_and_logged(guard_log):
    with pytest.raises(OSError, match="slimcore test guard: no connection outside loopback "
                                      r"\(10.255.255.1\)"):
        socket.create_connection(("10.255.255.1", 9), timeout=1)
    with pytest.raises(socket.gaierror, match="no name lookup outside loopback"):
        socket.getaddrinfo("huggingface.co", 443)
    assert guard_log().splitlines()[0].startswith("connection 10.255.255.1")
    assert "name lookup huggingface.co" in guard_log()


def test_the_guard_holds_in_the_processes_a_test_starts(guard_log):
    code = ("import socket\ntry:\n    socket.create_connection(('example.com', 80), 1)\n"
            "except OSError as e:\n    print(type(e).__name__)")
    done = subprocess.run([sys.executable, "-c", code], env=guarded({"PYTHONPATH": "x"}),
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "gaierror"
    assert "name lookup example.com" in guard_log()


def test_loopback_is_allowed():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=5).close()
    assert socket.getaddrinfo("localhost", 80)


def test_home_and_a_run_without_an_output_folder_stay_in_the_sandbox(write_config):
    assert Path.home().is_relative_to(SANDBOX)
    code = "import os; print(os.path.expanduser('~'))"
    home = subprocess.run([sys.executable, "-c", code], env=guarded(), capture_output=True,
                          text=True, timeout=60).stdout.strip()
    assert Path(home).is_relative_to(SANDBOX)
    config = write_config({"run": {"steps": 1, "name": "no_output_dir"}, "output": None})
    done = run_cli("run", str(config))
    assert done.returncode == 0, done.stderr
    assert (SANDBOX / "runs" / "no_output_dir" / "run.json").is_file()
    assert not (REPO / "runs" / "no_output_dir").exists()
