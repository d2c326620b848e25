"""Diagnostics hooks: which weights, bounded snapshots, exact update norms, feature cosine, no side effects."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.engine.diagnostics import (DiagnosticHooks, DiagnosticsConfig, cosine_archs, default_hooks_factory,
                                 feature_cosine_matrix, load_diagnostics, mean_off_diagonal, pick_layers,
                                 snapshot_steps)
from harness.spaces.nb201 import Nb201Space
from methods.spos import Spos, SposConfig


def test_default_layers_are_one_searchable_conv_in_first_middle_last_cell(job_factory):
    job = job_factory(cells=2)  # 3 stages x 2 cells: cells are layers 0,1 | 3,4 | 6,7
    model = job.build_supernet()
    names = pick_layers(model, job)
    params = dict(model.named_parameters())
    assert len(names) == 3
    assert [n.split(".")[1] for n in names] == ["0", "3", "7"]
    for n in names:
        assert params[n].ndim == 4 and ".edges." in n  # a candidate op, not stem / reduction
        assert "nor_conv_3x3" in n  # the largest conv of the cell


def test_layer_patterns_select_by_name(job_factory):
    job = job_factory()
    model = job.build_supernet()
    names = pick_layers(model, job, ("stem.*", "layers.0.edges.1.nor_conv_1x1.*"))
    assert names == ["stem.0.weight", "layers.0.edges.1.nor_conv_1x1.op.1.weight"]


def test_snapshot_schedule_is_bounded():
    assert snapshot_steps(100, 6) == [0, 20, 40, 60, 80, 100]
    assert len(snapshot_steps(100_000, 6)) == 6
    assert snapshot_steps(3, 6) == [0, 1, 2, 3]


def test_update_norms_are_exact_and_snapshots_bounded(job_factory, tmp_path):
    job = job_factory()
    model = job.build_supernet()
    hooks = DiagnosticHooks(tmp_path / "d", DiagnosticsConfig(n_snapshots=4, feature_cosine=False))
    hooks.on_train_start(model, job)
    params = dict(model.named_parameters())
    tracked = [params[n] for n in hooks.layers]
    total = 30
    expected = np.zeros((total, len(tracked)))
    g = torch.Generator().manual_seed(0)
    for step in range(1, total + 1):
        for i, p in enumerate(tracked):
            if (step + i) % 3 == 0:  # some steps leave a weight untouched (path not sampled)
                continue
            before = p.detach().clone()
            with torch.no_grad():
                p.add_(torch.randn(p.shape, generator=g) * 0.01 * step)
            expected[step - 1, i] = float((p.detach() - before).norm() / before.norm())
        hooks.on_step(model, step, total)
    hooks.on_train_end(model, job)
    d = load_diagnostics(tmp_path / "d")
    np.testing.assert_allclose(d["arrays"]["norms_p0"], expected, rtol=1e-4, atol=1e-7)
    assert list(d["arrays"]["snap_steps_p0"]) == [0, 10, 20, 30]
    snaps = d["arrays"]["snap_0_p0"]
    assert snaps.shape == (4, tracked[0].numel())
    np.testing.assert_allclose(snaps[-1], tracked[0].detach().numpy().ravel())
    assert d["phases"][0]["updated_fraction"][0] == pytest.approx(20 / 30)


def test_feature_cosine_archs_differ_only_at_last_decision():
    space = Nb201Space()
    archs, how = cosine_archs(space, np.random.default_rng(0), 4)
    assert how == "last-decision" and len(archs) == 4
    assert len({a[:-1] for a in archs}) == 1 and len({a[-1] for a in archs}) == 4
    assert len({space.isomorphism_key(a) for a in archs}) == 4


def test_feature_cosine_matrix_properties(job_factory):
    job = job_factory()
    model = job.build_supernet()
    x = job.data.search_x[:16]
    archs, _ = cosine_archs(job.space, np.random.default_rng(1), 4)
    m = feature_cosine_matrix(model, x, archs)
    assert m.shape == (4, 4)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-5)
    np.testing.assert_allclose(m, m.T, atol=1e-6)
    same = feature_cosine_matrix(model, x, [archs[0]] * 4)
    assert mean_off_diagonal(same) == pytest.approx(1.0, abs=1e-5)
    assert mean_off_diagonal(m) < 1.0 - 1e-4  # different operators give different features


def test_hooks_do_not_change_training(job_factory, tmp_path):
    """Same seed with and without hooks: identical scores (the hooks only observe)."""
    archs = [Nb201Space().sample(np.random.default_rng(i)) for i in range(6)]
    job_a = job_factory(epochs=1)
    scores_a = Spos("spos", SposConfig()).fit(job_a).score(archs)
    job_b = job_factory(epochs=1)
    job_b.hooks = default_hooks_factory(job_b, tmp_path / "run")
    scores_b = Spos("spos", SposConfig()).fit(job_b).score(archs)
    np.testing.assert_array_equal(scores_a, scores_b)
    meta = json.loads((tmp_path / "run" / "diagnostics" / job_b.job_dir.name / "diagnostics.json").read_text())
    assert meta["errors"] == []
    assert meta["feature_cosine"]["selection"] == "last-decision"
    assert 0 < meta["overhead"]["hooks_during_training_s"] < meta["overhead"]["training_wall_s"]
    assert len(meta["phases"][0]["snapshot_steps"]) == DiagnosticsConfig().n_snapshots


def test_hook_failures_are_recorded_not_raised(job_factory, tmp_path):
    class NoFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

    job = job_factory()
    hooks = DiagnosticHooks(tmp_path / "d")
    model = NoFeatures()
    hooks.on_train_start(model, job)
    hooks.on_step(model, 1, 2)
    hooks.on_step(model, 2, 2)
    hooks.on_train_end(model, job)  # model.features is missing: recorded, not raised
    meta = json.loads((tmp_path / "d" / "diagnostics.json").read_text())
    assert any("feature_cosine" in e for e in meta["errors"])
    assert meta["layers"] == ["conv.weight"]
