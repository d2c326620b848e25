"""The reference rows: `params` / `flops` are the standalone network's counts at the job's own net
config (checked against a closed-form NB201 count), `random` is seeded, order-free and per seed."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau

from harness.engine.method import create_method
from harness.spaces.nb201 import CONV1, CONV3, NB201_OPS, NONE, POOL, SKIP, Nb201Space
from tests.conftest import make_job

ARCHS = [
    (CONV3,) * 6,
    (CONV1,) * 6,
    (SKIP,) * 6,
    (NONE,) * 6,
    (POOL,) * 6,
    (CONV3, NONE, CONV1, SKIP, POOL, CONV3),
    (NONE, CONV3, CONV3, NONE, NONE, CONV1),  # edges into nodes 1 and 2 do not reach the output
]


def nb201_params(arch, channels: int, cells: int, num_classes: int) -> int:
    """Closed-form parameter count of a standalone NB201 network (BN not affine: convs + head).

    Every edge's operator is built, live or not: a 1x1 conv has w*w weights, a 3x3 conv 9*w*w.
    """
    c = channels
    per_cell = lambda w: sum({CONV1: w * w, CONV3: 9 * w * w}.get(op, 0) for op in arch)  # noqa: E731
    total = 3 * c * 9  # stem
    for stage, w in enumerate((c, 2 * c, 4 * c)):
        if stage:
            total += 9 * (w // 2) * w + 9 * w * w + (w // 2) * w  # ResBlock: conv_a, conv_b, 1x1 downsample
        total += cells * per_cell(w)
    return total + 4 * c * num_classes + num_classes  # linear head


def _scores(job, method: str, archs=ARCHS) -> np.ndarray:
    m = create_method(method)
    assert m.trains_supernet is False
    scores = m.fit(job).score(archs)
    assert job.counters.steps == 0 and job.counters.images_seen == 0  # no training
    return scores


@pytest.mark.parametrize("channels,cells", [(4, 1), (6, 2)])
def test_params_row_is_the_standalone_parameter_count_at_the_jobs_shape(tmp_path, channels, cells):
    job = make_job(tmp_path, channels=channels, cells=cells)
    scores = _scores(job, "params")
    space = Nb201Space()
    for arch, s in zip(ARCHS, scores):
        net = space.build_standalone(arch, job.net_cfg)
        assert s == sum(p.numel() for p in net.parameters())
        assert s == nb201_params(arch, channels, cells, job.net_cfg.num_classes)


def test_flops_row_orders_architectures_by_their_operators(tmp_path):
    """At C=4, N=1, 8px: swapping one edge's 3x3 conv for a 1x1 conv removes 8 * w^2 * H^2 MACs in
    every cell (the same C^2 R^2 in each stage, as width doubles when resolution halves)."""
    job = make_job(tmp_path)
    cfg = job.net_cfg
    one_swapped = (CONV1,) + (CONV3,) * 5
    flops = dict(zip(["conv3", "conv1", "skip", "none", "pool", "one_swapped"],
                     _scores(job, "flops", [(CONV3,) * 6, (CONV1,) * 6, (SKIP,) * 6, (NONE,) * 6, (POOL,) * 6,
                                            one_swapped])))
    assert flops["conv3"] > flops["one_swapped"] > flops["conv1"] > flops["skip"]
    assert flops["conv3"] - flops["one_swapped"] == 8 * 3 * cfg.cells * cfg.channels ** 2 * cfg.resolution ** 2
    # skip, none and pool add no multiply-accumulates: only the fixed stem / reductions / head count
    assert flops["skip"] == flops["none"] == flops["pool"] > 0


def test_flops_row_follows_the_jobs_resolution(tmp_path):
    small = _scores(make_job(tmp_path / "a", resolution=8), "flops")
    big = _scores(make_job(tmp_path / "b", resolution=16), "flops")
    # convolutions scale with the pixel count (4x); the linear head does not, so a bit under 4x
    assert np.all(big > 3 * small) and np.all(big < 4 * small)


def test_params_and_flops_rows_are_the_same_for_every_seed(tmp_path):
    for method in ("params", "flops"):
        a = _scores(make_job(tmp_path / method, seed=0), method)
        b = _scores(make_job(tmp_path / method, seed=1), method)
        np.testing.assert_array_equal(a, b)


def _random_archs(n: int, seed: int = 0) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    return list(dict.fromkeys(tuple(rng.integers(len(NB201_OPS), size=6).tolist()) for _ in range(n)))


def test_random_row_is_deterministic_per_seed_and_differs_between_seeds(tmp_path):
    archs = _random_archs(200)
    a = _scores(make_job(tmp_path / "a", seed=0), "random", archs)
    again = _scores(make_job(tmp_path / "b", seed=0), "random", archs)
    other = _scores(make_job(tmp_path / "c", seed=1), "random", archs)
    np.testing.assert_array_equal(a, again)
    assert not np.any(a == other)
    assert len(np.unique(a)) == len(archs) and np.all((a >= 0) & (a < 1))
    # no relation between the seeds' scores (|tau| of independent uniforms on 200 items is < 0.25)
    assert abs(kendalltau(a, other).statistic) < 0.25


def test_random_score_of_an_arch_does_not_depend_on_the_set(tmp_path):
    archs = _random_archs(50)
    job = make_job(tmp_path)
    scorer = create_method("random").fit(job)
    full = scorer.score(archs)
    np.testing.assert_array_equal(scorer.score(archs[::-1]), full[::-1])
    np.testing.assert_array_equal(scorer.score(archs[10:20]), full[10:20])
