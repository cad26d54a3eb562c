import os

import pytest
import torch

from kd_plugin.data import write_synthetic_cifar

# pytest-xdist's workers (-n) share the cores: each gets its share, at most 2 threads (tiny batches gain no more)
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny batches gain nothing from a second thread, and lose much when other processes hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A generated CIFAR-10-format dataset: 200 train / 60 test images."""
    return write_synthetic_cifar(str(tmp_path_factory.mktemp("tiny_cifar")), train_images=200, test_images=60, seed=0)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
