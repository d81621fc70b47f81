"""Test set-up shared by the whole suite.

Threads: every test process (and every subprocess it starts, through OMP_NUM_THREADS) runs
torch on one thread. Tiny models gain nothing from a second thread, and on a busy 2-core
machine OpenMP threads spin-waiting on each other made a tiny UNet call 30-100x slower
(measured: 12 ms on one thread, 0.3-2 s on two while other processes ran). Under pytest-xdist
each worker is one process on one core.
"""

import os

# before torch is imported, so that this process and the subprocesses of the CLI tests read it
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """The suite already runs on one thread (see above); kept for the modules that ask for
    it (``pytestmark = pytest.mark.usefixtures("one_thread")``), in case a test changed it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
