"""One module per method; each registers itself with ``methods.base.register_method``."""
