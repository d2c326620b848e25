"""Fidelity curves: log-spaced points, scoring that never changes training, idempotent records."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from harness.engine.curves import (CURVE_SCORES, FidelityCurveHook, append_point, curve_archs, curve_fractions,
                            read_curve_scores)
from harness.engine.method import create_method
from tests.conftest import make_job

SUPERNET_METHODS = ("spos", "fairnas", "kshot", "pinas", "senas", "stcnas", "stcnas-alpha")


def test_curve_fractions_are_log_spaced_and_end_at_one():
    f = curve_fractions(8)
    assert len(f) == 8 and f[0] == pytest.approx(0.01) and f[-1] == 1.0
    ratios = np.diff(np.log(f))
    assert np.allclose(ratios, ratios[0])
    assert curve_fractions(0) == () and curve_fractions(1) == (1.0,)


def test_curve_archs_is_a_fixed_subset_in_scored_order():
    archs = [(i,) for i in range(50)]
    sub = curve_archs(archs, 10, seed=0)
    assert len(sub) == 10 and sub == curve_archs(archs, 10, seed=0)
    assert sub == sorted(sub)  # scored order kept
    assert curve_archs(archs, 0) == archs and curve_archs(archs, 80) == archs
    assert curve_archs(archs, 10, seed=1) != sub


def test_append_point_is_idempotent(tmp_path):
    rows = pd.DataFrame({"point": 0, "fraction": 0.01, "step": 3, "images_seen": 96, "source": "curve",
                         "arch_index": [2, 1], "arch": ["b", "a"], "score": [0.5, 0.25]})
    append_point(tmp_path, rows)
    append_point(tmp_path, rows)  # a resumed job records the same point again
    append_point(tmp_path, rows.assign(point=1, score=[0.75, 0.5]))
    df = read_curve_scores(tmp_path)
    assert len(df) == 4 and sorted(df["point"].unique()) == [0, 1]
    assert df[df.point == 0]["arch_index"].tolist() == [1, 2]


def _fit(tmp_path, name, with_curve, **budget):
    job = make_job(tmp_path / ("curve" if with_curve else "plain"), seed=1, checkpoint_every=3, **budget)
    archs = [job.space.sample(np.random.default_rng(5)) for _ in range(12)]
    hook = None
    if with_curve:
        hook = FidelityCurveHook(job, archs, curve_fractions(5))
        job.hooks = hook
    torch.manual_seed(123)  # the global stream a method may touch: identical in both runs
    scorer = create_method(name).fit(job)
    scores = np.asarray(scorer.score(archs), dtype=float)
    return job, scorer, scores, hook


def _final_model(scorer) -> torch.nn.Module:
    for path in (("evaluator", "model"), ("search", "model"), ("model",)):
        obj = scorer
        for attr in path:
            obj = getattr(obj, attr, None)
        if isinstance(obj, torch.nn.Module):
            return obj
    raise AssertionError(f"no model on {type(scorer).__name__}")


def _ckpt_tensors(job_dir):
    out = {}
    for path in sorted(job_dir.glob("*-ckpt.pt")):
        state = torch.load(path, weights_only=True)
        out[path.name] = {k: v.clone() for k, v in state["model"].items()}
        out[path.name + ":step"] = state["step"]
    return out


@pytest.mark.parametrize("name", SUPERNET_METHODS)
def test_curve_points_leave_training_bit_identical(tmp_path, name):
    """Weights, checkpoints, counters, state and final scores are the same with and without a curve,
    and the curve really scored intermediate points (with scores that differ from the final ones)."""
    budget = dict(epochs=3) if name == "senas" else {}
    plain_job, plain_scorer, plain_scores, _ = _fit(tmp_path, name, False, **budget)
    curve_job, curve_scorer, curve_scores, hook = _fit(tmp_path, name, True, **budget)
    np.testing.assert_array_equal(plain_scores, curve_scores)
    assert plain_job.counters.__dict__ == curve_job.counters.__dict__
    for (ka, va), (kb, vb) in zip(_final_model(plain_scorer).state_dict().items(),
                                  _final_model(curve_scorer).state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    a, b = _ckpt_tensors(plain_job.job_dir), _ckpt_tensors(curve_job.job_dir)
    assert a.keys() == b.keys() and a
    for key in a:
        if key.endswith(":step"):
            assert a[key] == b[key]
        else:
            for t in a[key]:
                assert torch.equal(a[key][t], b[key][t]), (key, t)
    assert plain_job.state == curve_job.state  # checkpoint sha256 digests included
    recorded = read_curve_scores(curve_job.job_dir)
    assert hook.points_scored >= 2 and recorded["point"].nunique() == hook.points_scored
    assert (recorded["source"] == "curve").all()
    first = recorded[recorded.point == recorded.point.min()].sort_values("arch_index")
    assert len(first) == 12
    assert not np.array_equal(np.sort(first["score"].to_numpy()), np.sort(curve_scores)), \
        "an early point scored like the final model: the curve did not score the current state"
    assert not (plain_job.job_dir / CURVE_SCORES).exists()


def test_method_without_curve_scorer_records_no_points(tmp_path):
    job = make_job(tmp_path)
    hook = FidelityCurveHook(job, [job.space.sample(np.random.default_rng(0))], curve_fractions(4))
    job.counters.images_seen = 10 ** 6
    hook.on_step(None, 1, 1)
    assert hook.points_scored == 0 and read_curve_scores(job.job_dir).empty
