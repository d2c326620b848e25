"""Ground truth: the provider base class and tables (layer 3), benchmark and standalone providers (plugins)."""
