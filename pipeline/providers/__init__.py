"""Provider adapters: one module per wire format (the guide's table of presets is pipeline.presets)."""
