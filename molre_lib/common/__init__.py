"""Small helpers every layer may use: config-key checks, atomic file writes, device resolution."""
