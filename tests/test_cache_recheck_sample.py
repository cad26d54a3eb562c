"""The teacher cache's re-check sample cannot be predicted by whoever writes the cache file."""
import torch

from kd_plugin.distill.cache_check import SAMPLE_ROWS, sample_rows


def drawn(filled):
    indices, views = sample_rows(filled)
    return set(zip(indices.tolist(), views.tolist(), strict=True))


def test_each_open_draws_another_sample_so_no_row_is_known_to_be_skipped():
    filled = torch.zeros(500, 8, dtype=torch.bool)
    filled[::2, ::3] = True  # 750 filled rows, far more than a sample
    first = drawn(filled)
    assert len(first) == SAMPLE_ROWS and all(filled[i, v] for i, v in first)
    # A writer who knew the first sample would poison only the other rows; the next opens look at them.
    later = [drawn(filled) for _ in range(5)]
    assert all(sample - first for sample in later)
    assert len(set.union(*later) - first) > SAMPLE_ROWS


def test_the_sample_leaves_the_seeded_generators_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    drawn(torch.ones(100, 4, dtype=torch.bool))
    assert torch.equal(torch.rand(3), expected)


def test_a_small_cache_is_checked_whole():
    filled = torch.zeros(10, 2, dtype=torch.bool)
    filled[:, 0] = True
    assert drawn(filled) == {(i, 0) for i in range(10)}
