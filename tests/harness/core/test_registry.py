"""The one Registry behind every extension kind: adding, lazy specs, built-in packages, did-you-mean,
test-time mapping access, and third-party entry points (a plugin distribution that runs end to end)."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.core.errors import ConfigError
from harness.core.registry import Registry, load_object
from harness.engine.method import METHODS, MethodEntry, _method_entry
from harness.spaces.nb201 import Nb201Space
from tests.conftest import tiny_data

PLUGIN_PKG = "harness_plugin_demo"
PLUGIN_DIST = "harness-plugin-demo"
PLUGIN_METHOD = "plugin-sum"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def forget_modules():
    """Modules a test imports from tmp_path are dropped from sys.modules afterwards."""
    prefixes: list[str] = []
    yield prefixes.append
    for name in [m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in prefixes)]:
        del sys.modules[name]


# --- adding and finding -------------------------------------------------------------------
def test_add_register_and_get():
    reg = Registry("widget")
    a = reg.add("alpha", object())
    assert reg.get("alpha") is a and reg["alpha"] is a

    @reg.register("beta")
    class Beta:
        pass

    assert reg.get("beta") is Beta  # the decorator returns the class unchanged and registers it
    assert reg.names() == ["alpha", "beta"] and list(reg) == ["alpha", "beta"] and len(reg) == 2
    assert "alpha" in reg and "gamma" not in reg
    assert reg.items() == [("alpha", a), ("beta", Beta)]
    assert reg.origins == {"alpha": "builtin", "beta": "builtin"}


def test_unknown_name_says_did_you_mean_and_lists_the_names():
    reg = Registry("widget")
    reg.add("alpha", 1)
    reg.add("omega", 2)
    with pytest.raises(ConfigError, match=r"unknown widget 'alpah' \(did you mean 'alpha'\?\); "
                                          r"choose one of: alpha, omega"):
        reg.get("alpah")
    with pytest.raises(ConfigError) as info:
        reg.get("zzz")  # nothing close: no suggestion, still the list
    assert "did you mean" not in str(info.value) and "alpha, omega" in str(info.value)


def test_get_with_default_does_not_raise():
    reg = Registry("widget")
    reg.add("alpha", 1)
    sentinel = object()
    assert reg.get("nope", sentinel) is sentinel
    assert reg.get("nope", None) is None
    assert reg.get("alpha", sentinel) == 1


def test_a_name_registered_twice_is_an_error():
    reg = Registry("widget")
    first, second = object(), object()
    reg.add("alpha", first)
    reg.add("alpha", first)  # the same object again (a re-import) is fine
    with pytest.raises(ConfigError, match="widget name 'alpha' is registered twice"):
        reg.add("alpha", second)
    assert reg.get("alpha") is first
    reg.add("alpha", second, replace=True)
    assert reg.get("alpha") is second
    # an equal object (a module re-imported under the same name builds an equal entry) is no clash
    reg.add("entry", MethodEntry(int, (("x", 1),)))
    reg.add("entry", MethodEntry(int, (("x", 1),)))
    with pytest.raises(ConfigError, match="registered twice"):
        reg.add("entry", MethodEntry(int, (("x", 2),)))


def test_add_lazy_imports_the_module_on_first_lookup(tmp_path, monkeypatch, forget_modules):
    name = "lazy_widget_mod"
    _write(tmp_path / f"{name}.py", """
        IMPORTED = True
        class Thing:
            pass
        NESTED = type("N", (), {"inner": 42})
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_modules(name)
    reg = Registry("widget", coerce=lambda n, obj: ("coerced", n, obj))
    reg.add_lazy("thing", f"{name}:Thing")
    reg.add_lazy("inner", f"{name}:NESTED.inner")
    assert name not in sys.modules  # named, not imported
    assert reg.names() == ["inner", "thing"]  # listed before it is loaded
    assert name not in sys.modules
    kind, n, obj = reg.get("thing")
    assert name in sys.modules and (kind, n) == ("coerced", "thing") and obj is sys.modules[name].Thing
    assert reg.get("inner") == ("coerced", "inner", 42)  # dotted attributes are followed
    assert reg.get("thing") is reg.get("thing")  # resolved once
    # an eager entry wins over a lazy spec added later for the same name
    reg.add("eager", 1)
    reg.add_lazy("eager", f"{name}:Thing")
    assert reg.get("eager") == 1


def test_add_lazy_module_spec_registers_itself(tmp_path, monkeypatch, forget_modules):
    """A spec without ``:attr`` names a module that registers the name itself on import."""
    _write(tmp_path / "selfreg_pkg" / "__init__.py", """
        from harness.core.registry import Registry
        REG = Registry("gadget")
    """)
    _write(tmp_path / "selfreg_pkg" / "plug.py", """
        from selfreg_pkg import REG
        REG.add("made-by-import", "hello")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_modules("selfreg_pkg")
    reg = load_object("selfreg_pkg:REG")
    reg.add_lazy("made-by-import", "selfreg_pkg.plug")
    assert reg.get("made-by-import") == "hello"


def test_builtin_packages_are_imported_on_first_lookup(tmp_path, monkeypatch, forget_modules):
    """Every public module of a built-in package is imported on first lookup (and can register);
    modules starting with ``_`` are not."""
    pkg = "builtin_gadgets"
    _write(tmp_path / pkg / "__init__.py", f"""
        from harness.core.registry import Registry
        REG = Registry("gadget", builtin_packages=("{pkg}",))
    """)
    _write(tmp_path / pkg / "one.py", f"from {pkg} import REG\nREG.add('one', 1)\n")
    _write(tmp_path / pkg / "two.py", f"from {pkg} import REG\nREG.add('two', 2)\n")
    _write(tmp_path / pkg / "_private.py", f"from {pkg} import REG\nREG.add('private', 3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_modules(pkg)
    reg = load_object(f"{pkg}:REG")
    assert f"{pkg}.one" not in sys.modules
    with pytest.raises(ConfigError, match="did you mean 'two'"):
        reg.get("twoo")  # an unknown name triggers discovery, then the suggestion sees the modules
    assert reg.names() == ["one", "two"] and f"{pkg}._private" not in sys.modules
    assert reg.get("one") == 1


def test_mapping_access_serves_monkeypatch_setitem():
    reg = Registry("widget")
    reg.add("alpha", 1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(reg, "beta", 2)  # new name: removed afterwards
        mp.setitem(reg, "alpha", 10)  # existing name: replaced (no duplicate error), then restored
        assert reg.get("beta") == 2 and reg.get("alpha") == 10
    assert reg.names() == ["alpha"] and reg.get("alpha") == 1 and "beta" not in reg.origins
    reg["gamma"] = 3
    del reg["gamma"]
    assert "gamma" not in reg


# --- entry points: a third-party plugin distribution on sys.path -------------------------------
def make_plugin_dist(root: Path) -> None:
    """A distribution as pip installs it: the package plus ``<name>-<version>.dist-info``."""
    _write(root / PLUGIN_PKG / "__init__.py", '"""A third-party method package (test)."""\n')
    _write(root / PLUGIN_PKG / "method.py", '''
        """Scores an architecture by the sum of its choice indices: no training, deterministic."""
        import numpy as np

        from harness.engine.method import Method, MethodConfig, Scorer


        class _SumScorer(Scorer):
            def score(self, archs):
                return np.asarray([float(sum(a)) for a in archs])


        class SumScores(Method):
            Config = MethodConfig
            trains_supernet = False

            def fit(self, job):
                return _SumScorer()
    ''')
    dist_info = root / f"{PLUGIN_PKG}-0.1.dist-info"
    _write(dist_info / "METADATA", f"""\
        Metadata-Version: 2.1
        Name: {PLUGIN_DIST}
        Version: 0.1
    """)
    _write(dist_info / "entry_points.txt", f"""\
        [supernet_harness.methods]
        {PLUGIN_METHOD} = {PLUGIN_PKG}.method:SumScores
    """)


def put_plugin_on_path(root: Path, monkeypatch, forget_modules) -> Path:
    make_plugin_dist(root)
    monkeypatch.syspath_prepend(str(root))
    forget_modules(PLUGIN_PKG)
    return root


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch, forget_modules) -> Path:
    return put_plugin_on_path(tmp_path / "site", monkeypatch, forget_modules)


def test_a_fresh_registry_discovers_an_entry_point_plugin(plugin_on_path):
    reg = Registry("method", entry_point_group="supernet_harness.methods", coerce=_method_entry)
    assert PLUGIN_PKG + ".method" not in sys.modules
    entry = reg.get(PLUGIN_METHOD)
    cls = sys.modules[PLUGIN_PKG + ".method"].SumScores
    assert entry == MethodEntry(cls)
    assert reg.origins[PLUGIN_METHOD] == f"entry point {PLUGIN_DIST} ({PLUGIN_PKG}.method:SumScores)"
    method = entry.create(PLUGIN_METHOD)
    assert isinstance(method, cls) and method.name == PLUGIN_METHOD
    # the registry named in the group only: another group's registry does not see it
    other = Registry("suite", entry_point_group="supernet_harness.suites")
    assert PLUGIN_METHOD not in other


def test_a_registry_without_the_plugin_on_path_does_not_see_it():
    """The control for the test above: the name comes from the tmp distribution, not from the repo."""
    reg = Registry("method", entry_point_group="supernet_harness.methods", coerce=_method_entry)
    assert PLUGIN_METHOD not in reg


def test_an_entry_point_plugin_runs_end_to_end_through_the_cli(shared_dir, tmp_path, forget_modules):
    """`harness run --methods plugin-sum`: the global METHODS registry discovers the plugin, the
    runner scores with it, and metrics.csv / estimates.csv carry its rows; afterwards the registry
    is as it was (the plugin leaves no trace)."""
    METHODS.names()  # the built-ins are discovered in the real state, so restoring it below keeps them
    assert PLUGIN_METHOD not in METHODS._entries

    def fake_data(data_dir, cache_dir, resolution, score_size, device, progress=True, dataset="cifar10"):
        return tiny_data(resolution=resolution), {"source": "synthetic (test)", "splits": {}, "resolution": resolution}

    out = tmp_path / "run"
    tiny = ["channels=4", "cells=1", "resolution=8", "epochs=1", "batch_size=32", "score_size=128",
            "eval_batch_size=128", "threads=1", "checkpoint_every=0"]
    argv = ["run", "--suite", "nb201", "--methods", PLUGIN_METHOD, "--seeds", "0", "--budget", "smoke",
            "--archs", "sample:20", "--data-dir", str(shared_dir), "--device", "cpu", "--out", str(out),
            "--no-progress", "--no-report"]
    for item in tiny:
        argv += ["--set", item]
    with pytest.MonkeyPatch.context() as mp:
        put_plugin_on_path(tmp_path / "site", mp, forget_modules)
        # discovery again, into copies of the registry's tables that are put back afterwards
        for attr in ("_entries", "_lazy", "origins"):
            mp.setattr(METHODS, attr, dict(getattr(METHODS, attr)))
        mp.setattr(METHODS, "_discovered", False)
        mp.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
        mp.setattr("harness.study.runner.prepare_data", fake_data)
        assert main(argv) == 0
        assert METHODS.origins[PLUGIN_METHOD].startswith(f"entry point {PLUGIN_DIST}")
    assert PLUGIN_METHOD not in METHODS and "spos" in METHODS
    met = pd.read_csv(out / "metrics.csv")
    mine = met[met.method == PLUGIN_METHOD]
    assert set(met.method) == {PLUGIN_METHOD} and (mine.status == "done").all()
    tau = mine[(mine.metric == "kendall_tau") & (mine.subset == "scored")]["value"]
    assert len(tau) == 1 and np.isfinite(tau.iloc[0])
    est = pd.read_csv(out / "estimates.csv")
    assert len(est) == 20
    space = Nb201Space()
    from_arch = [float(sum(space.parse(a))) for a in est["arch"]]
    assert est["score"].tolist() == from_arch  # the plugin's own scores, not another method's
