"""Provider adapters: one module per wire format, presets for the guide's table."""
