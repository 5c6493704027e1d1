"""The console as a user sees it: in a real pseudo-terminal (the bar) and through a pipe
(plain lines)."""

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from conftest import REPO


def run_in_terminal(args, columns, interrupt_after=None, timeout=120):
    """`python -m slimcore ARGS` with stdout and stderr on a pseudo-terminal `columns` wide;
    with `interrupt_after`, SIGINT once that text has appeared. Returns (status, text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "slimcore", *args], stdin=subprocess.DEVNULL,
                               stdout=slave, stderr=slave, cwd=REPO, env=os.environ.copy())
    os.close(slave)
    output, sent, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            output += chunk
        if interrupt_after and not sent and interrupt_after.encode() in output:
            process.send_signal(signal.SIGINT)
            sent = True
        if process.poll() is not None and not ready:
            break
    os.close(master)
    return process.wait(timeout=30), output.decode(errors="replace")


def segments(text):
    """What the terminal shows line by line: each carriage return starts a redraw."""
    return [part for line in text.replace("\r\n", "\n").split("\n") for part in line.split("\r")]


def test_in_a_terminal_the_bar_leaves_start_up_lines_and_samples_whole(write_config):
    config = write_config({"run": {"steps": 6}, "samples": {"prompts": ["We the"]}})
    status, text = run_in_terminal(["run", str(config)], columns=120)
    assert status == 0, text
    shown = segments(text)
    assert any(s.startswith("data: ") and "shards" in s for s in shown), text  # not on the bar
    assert sum(s.startswith("sample @ ") for s in shown) == 2, text  # steps 3 and 6
    assert any("6/6 [" in s for s in shown), text  # the bar itself, finished
    assert not any(s.startswith("step 3/6 loss") for s in shown)  # no plain lines with a bar


def test_a_terminal_of_zero_columns_gets_plain_lines(write_config):
    config = write_config({"run": {"steps": 4}})
    status, text = run_in_terminal(["run", str(config)], columns=0)
    assert status == 0, text
    assert "step 1/4 loss" in text and "step 4/4 loss" in text


def test_ctrl_c_says_how_to_go_on(write_config):
    config = write_config({"run": {"steps": 400}, "intervals": {"log": 1}})
    status, text = run_in_terminal(["run", str(config)], columns=0, interrupt_after="step 3/400")
    assert status == 128 + signal.SIGINT, text
    assert f"go on with: slimcore run {config} --resume auto" in text
