"""K-shot NAS: simplex codes, warm-up, weight merging, code-dependent outputs, learned spread,
and exact reproduction of SPOS with K = 1."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from harness.engine.method import create_method
from harness.budgets import get_budget
from methods.kshot import (CODES_CSV, SIMPLEX_LR, KShotConfig, KShotCtx, KShotOp, KShotRun, SimplexNet, code_deviation,
                           code_spread, kshot_ops, merge_weights, simplex_lr, simplex_paths, uniform_code,
                           warn_if_degenerate)




def _run(job, **overrides) -> KShotRun:
    return KShotRun(job, dataclasses.replace(KShotConfig(), **overrides), total_steps=16)


def _archs(space, n: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def test_codes_are_on_the_simplex(job_factory) -> None:
    job = job_factory()
    run = _run(job, k=5)
    with torch.no_grad():  # random last layer: codes far from uniform, still on the simplex
        torch.nn.init.normal_(run.simplex.fc2.weight, std=3.0)
    codes = run.codes(_archs(job.space, 64))
    assert codes.shape == (64, 5)
    assert (codes >= 0).all()
    np.testing.assert_allclose(codes.sum(1), 1.0, atol=1e-6)
    assert codes.std(0).max() > 0.01  # not trivially uniform


def test_simplex_net_starts_uniform_and_is_two_layers() -> None:
    net = SimplexNet(30, 8, hidden=16)
    out = net(torch.eye(30))
    assert torch.equal(out, torch.full((30, 8), 1 / 8))
    assert [type(m).__name__ for m in net.children()] == ["Linear", "Linear"]


def test_warmup_uses_exactly_one_over_k(job_factory) -> None:
    job = job_factory()
    run = _run(job, k=4, warmup_share=0.5)  # 8 warm-up steps of 16
    assert run.warmup_steps == 8
    with torch.no_grad():
        torch.nn.init.normal_(run.simplex.fc2.weight, std=3.0)  # pi(a) is far from 1/K
    seen = []
    orig = run.model.forward
    run.model.forward = lambda x, arch, ctx=None: (seen.append(ctx.lam.detach().clone()), orig(x, arch, ctx))[1]
    x, y = job.data.train_x[:32], job.data.train_y[:32]
    for step in (0, 7):
        seen.clear()
        run.step(x, y, step)
        assert len(seen) == 1  # warm-up: no simplex step, one supernet path
        assert torch.equal(seen[0], torch.full((4,), 0.25))  # exactly 1/K, bit for bit
    seen.clear()
    run.step(x, y, 8)  # after warm-up: m simplex paths, then the supernet path with pi(a)
    assert len(seen) == run.m + 1 and run.m == 32 // run.config.min_images_per_path
    assert not torch.allclose(seen[-1], torch.full((4,), 0.25), atol=1e-3)
    assert torch.equal(uniform_code(3), torch.tensor([1 / 3] * 3))


def test_merged_weights_equal_weighted_sum(job_factory) -> None:
    job = job_factory()
    run = _run(job, k=3)
    op = kshot_ops(run.model)[0]
    lam = torch.tensor([0.2, 0.5, 0.3])
    for name, stack in zip(op.names, op.stacks()):
        assert stack.shape[0] == 3
        expected = 0.2 * stack[0] + 0.5 * stack[1] + 0.3 * stack[2]
        torch.testing.assert_close(op.merged(lam)[name], expected)
        torch.testing.assert_close(merge_weights(stack, lam), expected)
    # the operator computes exactly the base operator with the merged weights
    x = torch.randn(2, op.spec.c_in, 8, 8)
    conv = torch.nn.functional.conv2d(torch.relu(x), op.merged(lam)[op.names[0]],
                                      padding=op.base.op[1].padding)
    ref = torch.nn.functional.batch_norm(conv, None, None, training=True)
    torch.testing.assert_close(op(x, KShotCtx(lam)), ref, atol=1e-5, rtol=1e-5)


def test_copies_are_distinct_and_copy_one_is_spos_init(job_factory) -> None:
    job = job_factory()
    run = _run(job, k=2)
    spos = job.build_supernet()
    spos_params = list(spos.parameters())
    kshot_params = list(run.model.parameters())
    assert len(spos_params) == len(kshot_params)
    for p, q in zip(spos_params, kshot_params):
        if q.shape != p.shape:  # a K-shot stack: copy 1 is the SPOS init
            assert torch.equal(q[0], p)
            assert not torch.equal(q[1], p)
        else:
            assert torch.equal(q, p)


def test_different_codes_give_different_outputs(job_factory) -> None:
    job = job_factory()
    run = _run(job, k=2)
    arch = (3, 3, 3, 3, 3, 3)
    x = job.data.score_x[:16]
    with torch.no_grad():
        a = run.model(x, arch, KShotCtx(torch.tensor([1.0, 0.0])))
        b = run.model(x, arch, KShotCtx(torch.tensor([0.0, 1.0])))
        a2 = run.model(x, arch, KShotCtx(torch.tensor([1.0, 0.0])))
    assert torch.equal(a, a2)
    assert (a - b).abs().max() > 1e-3
    # with identical copies the code cannot matter: the difference comes from the copies
    with torch.no_grad():
        for op in kshot_ops(run.model):
            for s in op.stacks():
                s[1].copy_(s[0])
        b_same = run.model(x, arch, KShotCtx(torch.tensor([0.0, 1.0])))
    torch.testing.assert_close(a, b_same)


def test_after_training_codes_of_architectures_differ(job_factory) -> None:
    job = job_factory(epochs=2)
    method = create_method("kshot")
    method.config = dataclasses.replace(method.config, k=4, paths_per_simplex_step=2, simplex_lr=3e-2)
    scorer = method.fit(job)
    archs = _archs(job.space, 20)
    scores = scorer.score(archs)
    assert np.isfinite(scores).all()
    df = pd.read_csv(job.job_dir / CODES_CSV)
    codes = df[[f"lambda_{k}" for k in range(4)]].to_numpy()
    assert len(df) == 20 and (codes >= 0).all()
    np.testing.assert_allclose(codes.sum(1), 1.0, atol=1e-6)
    spread = scorer.extra()["kshot_codes"]
    print("learned code spread (tiny job, K=4):", spread)
    assert spread["n_archs"] == 20
    assert spread["pairwise_l1_mean"] > 0.01  # different architectures, different codes
    assert max(spread["std"]) > 1e-3
    assert job.state["kshot"]["warmup_steps"] == round(job.state["kshot"]["total_steps"] * 5 / 120)
    # the simplex step is accounted: m extra paths per post-warm-up step
    total, warm = job.state["kshot"]["total_steps"], job.state["kshot"]["warmup_steps"]
    assert job.counters.path_forward == total + 2 * (total - warm)


def test_code_spread_of_uniform_codes_is_zero() -> None:
    s = code_spread(np.full((10, 4), 0.25))
    assert s["pairwise_l1_mean"] == 0.0 and max(s["std"]) == 0.0
    assert s["entropy_mean"] == pytest.approx(np.log(4))


def test_k1_reproduces_spos_exactly(tmp_path) -> None:
    from tests.conftest import make_job

    archs = None
    out = {}
    for name in ("spos", "kshot-k1"):
        job = make_job(tmp_path / name, seed=3)
        archs = archs or _archs(job.space, 30, seed=5)
        out[name] = create_method(name).fit(job).score(archs)
        out[name + "-counters"] = job.counters.as_dict()
    assert create_method("kshot-k1").config.k == 1
    np.testing.assert_array_equal(out["spos"], out["kshot-k1"])  # same seed, same numbers
    assert out["spos-counters"] == out["kshot-k1-counters"]
    assert len(np.unique(out["spos"])) > 1


def test_kshot_op_rejects_wrong_code_length(job_factory) -> None:
    run = _run(job_factory(), k=3)
    op = kshot_ops(run.model)[0]
    assert isinstance(op, KShotOp)
    with pytest.raises(ValueError, match="K=3"):
        op(torch.randn(1, op.spec.c_in, 4, 4), KShotCtx(torch.ones(2) / 2))


def test_bad_config_is_a_config_error(job_factory) -> None:
    from harness.core.errors import ConfigError

    with pytest.raises(ConfigError, match="k=0"):
        _run(job_factory(), k=0)


def test_method_state_survives_a_weights_only_checkpoint(job_factory, tmp_path) -> None:
    job = job_factory()
    run = _run(job, k=3, paths_per_simplex_step=2, warmup_share=0.0)
    x, y = job.data.train_x[:32], job.data.train_y[:32]
    run.step(x, y, 0)
    torch.save(run.get_state(), tmp_path / "s.pt")
    expected_next = (job.space.sample(run.path_rng), job.space.sample(run.simplex_rng))
    codes = run.codes(_archs(job.space, 5))
    other = _run(job_factory(seed=1), k=3, paths_per_simplex_step=2)
    other.set_state(torch.load(tmp_path / "s.pt", weights_only=True))
    np.testing.assert_array_equal(other.codes(_archs(job.space, 5)), codes)
    assert (job.space.sample(other.path_rng), job.space.sample(other.simplex_rng)) == expected_next


# --- issue 19: the alternation's halves, b/m, each path's own code, lr per budget, fallback ----
def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_half_of_the_alternation_leaves_the_other_side_untouched(job_factory, monkeypatch) -> None:
    """Simplex step: Theta, shared weights and every BN buffer unchanged, no gradient written into
    them. Supernet step + its optimizer step: the simplex-net exactly as the simplex step left it."""
    job = job_factory(epochs=1)  # 8 steps of batch 32
    calls = {"simplex": 0, "supernet": 0}
    after_simplex: dict = {}
    orig_simplex, orig_supernet = KShotRun.simplex_step, KShotRun.supernet_step

    def spy_simplex(self, x, y):
        if after_simplex:  # the supernet half (and its SGD step) ran since: simplex-net untouched
            assert _same(_state(self.simplex), after_simplex)
        model = _state(self.model)  # parameters and BN running statistics
        out = orig_simplex(self, x, y)
        assert _same(_state(self.model), model)
        assert all(p.grad is None for p in self.model.parameters())
        after_simplex.clear()
        after_simplex.update(_state(self.simplex))
        calls["simplex"] += 1
        return out

    def spy_supernet(self, x, y, step):
        before = _state(self.simplex)
        out = orig_supernet(self, x, y, step)
        assert _same(_state(self.simplex), before)
        assert all(p.grad is None for p in self.simplex.parameters())
        calls["supernet"] += 1
        return out

    monkeypatch.setattr(KShotRun, "simplex_step", spy_simplex)
    monkeypatch.setattr(KShotRun, "supernet_step", spy_supernet)
    method = create_method("kshot")
    method.config = dataclasses.replace(method.config, k=3, warmup_share=0.0)
    method.fit(job)
    assert calls == {"simplex": 8, "supernet": 8}


@pytest.mark.parametrize("batch,expect_m", [(32, 4), (128, 16), (64, 8), (7, 1)])
def test_simplex_step_splits_the_batch_into_m_paths_of_b_over_m(job_factory, batch, expect_m) -> None:
    cfg = KShotConfig()
    assert simplex_paths(cfg, batch) == expect_m  # m = min(16, batch // 8), at least 1
    job = job_factory(batch_size=batch)
    run = KShotRun(job, dataclasses.replace(cfg, k=3), total_steps=4)
    sizes, archs = [], []
    orig = run.model.forward
    run.model.forward = lambda x, arch, ctx=None: (sizes.append(len(x)), archs.append(arch), orig(x, arch, ctx))[2]
    x, y = job.data.train_x[:batch], job.data.train_y[:batch]
    run.simplex_step(x, y)
    assert len(sizes) == expect_m and sum(sizes) == batch
    assert max(sizes) - min(sizes) <= 1  # b/m images each (tensor_split: sizes differ by at most one)


def test_scoring_uses_each_paths_own_code(job_factory, monkeypatch) -> None:
    job = job_factory(epochs=0.5)
    method = create_method("kshot")
    method.config = dataclasses.replace(method.config, k=4, simplex_lr=0.05, warmup_share=0.0)
    scorer = method.fit(job)
    with torch.no_grad():  # make the codes clearly architecture-dependent
        torch.nn.init.normal_(scorer.run.simplex.fc2.weight, std=3.0)
    archs = [a for a in _archs(job.space, 20, seed=7) if {2, 3} & set(a)][:6]  # each with a conv
    seen = []
    orig = KShotOp.forward

    def spy(self, x, ctx=None):
        seen.append(ctx.lam.detach().clone())
        return orig(self, x, ctx)

    monkeypatch.setattr(KShotOp, "forward", spy)
    expect = scorer.run.codes(archs)
    for arch, code in zip(archs, expect):
        seen.clear()
        scorer.score([arch])
        assert seen, "no K-shot operator ran"
        for lam in seen:  # every operator of this path merged with this architecture's code
            np.testing.assert_allclose(lam.numpy(), code, rtol=1e-6, atol=1e-7)
    assert np.abs(expect - expect[0]).max() > 0.05  # the codes differ between the paths


def test_simplex_lr_per_budget() -> None:
    cfg = KShotConfig()
    assert simplex_lr(cfg, get_budget("paper")) == pytest.approx(SIMPLEX_LR)
    assert simplex_lr(cfg, get_budget("study")) == pytest.approx(SIMPLEX_LR)  # same steps per image
    assert simplex_lr(cfg, get_budget("smoke")) == pytest.approx(SIMPLEX_LR * (50 / 64) / (3 / 128))
    assert simplex_lr(dataclasses.replace(cfg, simplex_lr=0.2), get_budget("smoke")) == 0.2


def test_near_uniform_codes_are_recorded_and_warned(job_factory) -> None:
    dev = code_deviation(np.array([[0.26, 0.24, 0.25, 0.25], [0.20, 0.30, 0.25, 0.25]]), 4)
    assert dev["max_abs_deviation"] == pytest.approx(0.05) and dev["min"] == 0.2 and dev["max"] == 0.3
    # a run whose simplex-net cannot move (lr tiny): codes stay at 1/K -> one warning with the numbers
    job = job_factory(epochs=0.5)
    method = create_method("kshot")
    method.config = dataclasses.replace(method.config, k=4, simplex_lr=1e-9, warmup_share=0.0)
    method.fit(job)
    assert len(job.warnings) == 1 and "K-shot codes stayed near uniform" in job.warnings[0]
    assert job.extra["kshot_code_deviation"]["max_abs_deviation"] < 1e-6
    assert job.extra["kshot_max_code_deviation"] == job.extra["kshot_code_deviation"]["max_abs_deviation"]
    # a threshold of 0 never warns; the numbers are recorded all the same
    job2 = job_factory(epochs=0.5, seed=1)
    method.config = dataclasses.replace(method.config, simplex_lr=1e-9, uniform_warn_rel=0.0)
    method.fit(job2)
    assert job2.warnings == [] and "kshot_code_deviation" in job2.extra


def test_kshot_warns_when_codes_collapse_to_one_hot(job_factory):
    """The opposite fallback: a simplex lr large enough to push every code to a vertex."""
    job = job_factory(epochs=0.5)
    method = create_method("kshot")
    method.config = dataclasses.replace(method.config, k=4, simplex_lr=1.0, warmup_share=0.0)
    method.fit(job)
    dev = job.extra["kshot_code_deviation"]
    assert dev["mean_largest_code"] > 0.9
    assert any("collapsed to near one-hot" in w for w in job.warnings)
    assert job.extra["kshot_mean_largest_code"] == dev["mean_largest_code"]


def test_code_deviation_finds_the_copy_most_architectures_weight_highest():
    codes = np.array([[0.1, 0.7, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.6, 0.2, 0.1, 0.1], [0.1, 0.8, 0.05, 0.05]])
    dev = code_deviation(codes, 4)
    assert dev["dominant_supernet"] == 1 and dev["dominant_share"] == 0.75
    assert dev["dominant_mean_code"] == pytest.approx((0.7 + 0.5 + 0.2 + 0.8) / 4)
    # one-hot codes spread over the copies: near one-hot, but no single copy took over
    spread = code_deviation(np.eye(4), 4)
    assert spread["mean_largest_code"] == 1.0 and spread["dominant_share"] == 0.25


class _FixedCodes:
    """A K-shot run stand-in whose codes are fixed (warn_if_degenerate reads k and codes)."""

    def __init__(self, codes: np.ndarray):
        self.k, self._codes = codes.shape[1], codes

    def codes(self, archs):
        return self._codes[np.arange(len(archs)) % len(self._codes)]


@pytest.mark.parametrize("codes,warned", [
    (np.array([[0.05, 0.75, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1]]), True),   # every arch on copy 1, mean 0.675
    (np.array([[0.05, 0.75, 0.1, 0.1], [0.6, 0.1, 0.2, 0.1]]), False),  # half on copy 1, half on copy 0
    (np.array([[0.2, 0.4, 0.2, 0.2], [0.2, 0.45, 0.2, 0.15]]), False),  # all on copy 1, but mean code < 1/2
])
def test_kshot_warns_when_one_supernet_takes_over(job_factory, codes, warned):
    job = job_factory()
    cfg = KShotConfig(k=codes.shape[1], spread_archs=10)
    dev = warn_if_degenerate(job, _FixedCodes(codes), cfg)
    said = [w for w in job.warnings if "collapsed onto one supernet" in w]
    assert bool(said) == warned
    if warned:
        assert "copy 1" in said[0] and job.extra["kshot_dominant_share"] == dev["dominant_share"] == 1.0
