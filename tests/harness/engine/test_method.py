"""The method contract: registered names (variants = config overrides), create_method, unknown-name
errors, MethodEntry, the entry-point coercion, and the small helpers every method shares."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

from harness.core.errors import ConfigError, HarnessError
from harness.core.registry import Registry
from harness.engine.method import (METHODS, Collapsed, JobFailed, Method, MethodConfig, MethodEntry, Scorer,
                                   _method_entry, create_method, method_names, register_method, rng_state_hooks)


@dataclass(frozen=True)
class _ToyConfig(MethodConfig):
    alpha: int = 1
    beta: str = "b"


class _Toy(Method):
    Config = _ToyConfig

    def fit(self, job):  # pragma: no cover - never trained here
        raise NotImplementedError


def test_register_method_variants_carry_their_config_overrides():
    METHODS.names()  # built-ins discovered in the real tables first
    with pytest.MonkeyPatch.context() as mp:  # registrations go into copies, put back afterwards
        for attr in ("_entries", "_lazy", "origins"):
            mp.setattr(METHODS, attr, dict(getattr(METHODS, attr)))

        @register_method("toy")
        @register_method("toy-a3", alpha=3)
        @register_method("toy-both", beta="z", alpha=7)
        class Toy(_Toy):
            pass

        assert METHODS.get("toy") == MethodEntry(Toy, ())
        assert METHODS.get("toy-a3") == MethodEntry(Toy, (("alpha", 3),))
        # overrides are sorted, so keyword order does not make a different entry
        assert METHODS.get("toy-both") == MethodEntry(Toy, (("alpha", 7), ("beta", "z")))
        assert create_method("toy").config == _ToyConfig()
        assert create_method("toy-a3").config == _ToyConfig(alpha=3)
        both = create_method("toy-both")
        assert type(both) is Toy and both.name == "toy-both" and both.config == _ToyConfig(alpha=7, beta="z")
        assert {"toy", "toy-a3", "toy-both", "spos"} <= set(method_names())
    assert "toy" not in METHODS and "spos" in METHODS


def test_builtin_variants_differ_from_their_base_only_in_the_override():
    base, variant = create_method("pinas"), create_method("pinas-no-cp")
    assert type(base) is type(variant)
    assert base.config.cross_path is True and variant.config == dataclasses.replace(base.config, cross_path=False)
    assert create_method("params").config.quantity == "params" and create_method("flops").config.quantity == "flops"
    assert create_method("kshot-k1").config.k == 1 != create_method("kshot").config.k


def test_create_method_builds_the_classes_own_frozen_config():
    for name in method_names():
        m = create_method(name)
        assert m.name == name and type(m.config) is type(m).Config
        assert isinstance(m.config, MethodConfig)
        assert m.describe() == {"class": type(m).__name__, "config": dataclasses.asdict(m.config)}
        if dataclasses.fields(m.config):
            field = dataclasses.fields(m.config)[0].name
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(m.config, field, None)


def test_unknown_method_names_the_close_matches():
    with pytest.raises(ConfigError, match=r"unknown method 'spoos' \(did you mean 'spos'\?\)") as info:
        create_method("spoos")
    assert "choose one of:" in str(info.value)
    for name in ("spos", "pinas", "params"):  # the full list, so the user can pick
        assert name in str(info.value)
    assert isinstance(info.value, HarnessError)  # the CLI shows it as one line, exit 2


def test_method_entry_create():
    entry = MethodEntry(_Toy, (("beta", "q"),))
    m = entry.create("named")
    assert type(m) is _Toy and m.name == "named" and m.config == _ToyConfig(beta="q")
    assert MethodEntry(_Toy).create("plain").config == _ToyConfig()
    # a variant naming a field the config lacks: one line naming the method, the field and the fix
    with pytest.raises(ConfigError, match=r"method 'bad' overrides unknown _ToyConfig field\(s\) gamma.*register_method"):
        MethodEntry(_Toy, (("gamma", 1),)).create("bad")


def test_entry_point_coercion_accepts_method_classes_only():
    assert _method_entry("toy", _Toy) == MethodEntry(_Toy)
    entry = MethodEntry(_Toy, (("alpha", 2),))
    assert _method_entry("toy", entry) is entry  # a prepared entry passes through
    for bad in (object(), _Toy("x", _ToyConfig()), int, Scorer, "methods.spos:Spos"):
        with pytest.raises(TypeError, match="method entry point 'toy' names .*not a Method subclass"):
            _method_entry("toy", bad)
    # the same check when a registry loads the object (lazy spec / entry point)
    reg = Registry("method", coerce=_method_entry)
    reg.add_lazy("dumps", "json:dumps")
    with pytest.raises(TypeError, match="'dumps'"):
        reg.get("dumps")
    reg.add_lazy("toy", f"{__name__}:_Toy")
    assert reg.get("toy") == MethodEntry(_Toy)


def test_job_failed_carries_status_reason_and_step():
    exc = JobFailed("loss went NaN", step=12)
    assert exc.status == "failed" and exc.reason == "loss went NaN" and exc.step == 12 and str(exc) == "loss went NaN"
    col = Collapsed("constant outputs")
    assert isinstance(col, JobFailed) and col.status == "collapsed" and col.step is None


def test_rng_state_hooks_restore_the_path_stream():
    rng = np.random.default_rng(5)
    hooks = rng_state_hooks(rng)
    rng.random(3)
    saved = hooks["get_state"]()
    expected = rng.random(4)
    rng.random(10)
    hooks["set_state"](saved)
    np.testing.assert_array_equal(rng.random(4), expected)
    assert set(saved) == {"path_rng"} and set(rng_state_hooks(rng, "k")["get_state"]()) == {"k"}


def test_warnings_and_recorded_values_reach_the_jobs_extra(tmp_path):
    """`job.warn` keeps one plain string per detected fallback (once), its numbers go to `extra`
    under their own keys; `job_extra` merges the scorer's extra and its warnings after the job's."""
    from harness.engine.job import job_extra
    from tests.conftest import make_job

    job = make_job(tmp_path)
    job.record("grad_clip", {"train": {"clipped_steps": 3}})
    job.warn("codes stayed near uniform: max |code-1/K| = 0.009 (1/K = 0.125)", max_code_deviation=0.009)
    job.warn("codes stayed near uniform: max |code-1/K| = 0.009 (1/K = 0.125)", max_code_deviation=0.009)
    extra = job_extra(job, {"derived": "x", "warnings": ["alphas stuck", job.warnings[0]]})
    assert extra["warnings"] == ["codes stayed near uniform: max |code-1/K| = 0.009 (1/K = 0.125)", "alphas stuck"]
    assert extra["max_code_deviation"] == 0.009 and extra["derived"] == "x"
    assert extra["grad_clip"] == {"train": {"clipped_steps": 3}}
    assert job_extra(make_job(tmp_path / "b"), None) == {"warnings": []}
