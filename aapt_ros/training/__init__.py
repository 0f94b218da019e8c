"""Training package: makes the checkpoints the runtime streams from (never imported by the runtime)."""
