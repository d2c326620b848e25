"""One module per method; each registers itself with ``harness.engine.method.register_method``."""
