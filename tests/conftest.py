"""Test-wide environment: offline hub, no progress bars, no tokenizer thread pools."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["ADAPTLAB_PROGRESS"] = "0"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# OpenMP threads that spin while idle make torch 10-20x slower when another process shares the
# CPUs; sleeping waiters cost nothing measurable on an idle machine. Must be set before torch loads
# (children such as `python -m adaptlab.cli` inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


import socket  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def listener():
    """A loopback TCP listener, for tests that check sandboxed code cannot connect to it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.2)
    yield srv
    srv.close()
