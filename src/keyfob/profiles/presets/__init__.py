"""Built-in provider presets, one module each (listed in ``registry.DEFAULT_PRESETS``)."""
