"""Analysis of trained runs: routing telemetry, Grad-CAM explanations, the interactive viewer and the sweep summary."""
