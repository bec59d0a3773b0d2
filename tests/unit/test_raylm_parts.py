"""The Ray path's parts that need no Ray: the sharding, the config fields, the install hint.
The path itself runs in tests/integration/test_ray_synthesis.py."""
from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaptlab.config import ConfigError, from_dict
from adaptlab.errors import AdaptlabError
from adaptlab.lm.config import BackendConfig
from adaptlab.lm.raylm import shards
from adaptlab.lm.registry import make_lm


@given(st.integers(0, 300), st.integers(1, 40), st.integers(1, 9))
def test_shards_cover_every_index_once_in_order(n, size, workers):
    parts = shards(n, size, workers)
    assert [i for a, b in parts for i in range(a, b)] == list(range(n))
    lengths = [b - a for a, b in parts]
    assert all(0 < k <= size for k in lengths)
    assert not lengths or max(lengths) - min(lengths) <= 1
    assert len(parts) == min(n, max(workers, -(-n // size)))  # every worker busy when n allows


def test_shards_examples():
    assert shards(8, 8, 2) == [(0, 4), (4, 8)]  # a teacher chunk of 8 over 2 workers
    assert shards(40, 8, 2) == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)]
    assert shards(3, 8, 4) == [(0, 1), (1, 2), (2, 3)]
    assert shards(5, 8, 4) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert shards(0, 8, 2) == []


def test_ray_fields_default_off_and_are_checked():
    cfg = BackendConfig()
    assert (cfg.ray_workers, cfg.ray_address, cfg.ray_cpus_per_worker, cfg.ray_gpus_per_worker,
            cfg.ray_task_retries) == (0, None, 1.0, 0.0, 3)
    for field in ("ray_workers", "ray_task_retries", "ray_cpus_per_worker", "ray_gpus_per_worker"):
        with pytest.raises(ConfigError, match=f"{field}: expected >= 0"):
            from_dict(BackendConfig, {field: -1})
    with pytest.raises(ConfigError, match="ray_workers: expected int"):
        from_dict(BackendConfig, {"ray_workers": "4"})
    assert from_dict(BackendConfig, {"ray_workers": 4, "ray_gpus_per_worker": 1}).ray_gpus_per_worker == 1.0


def test_missing_ray_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AdaptlabError, match=r"pip install 'adaptlab\[scale\]'"):
        make_lm(BackendConfig(ray_workers=2))
