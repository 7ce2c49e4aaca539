"""The benchmark library used by the CLI and by benchmarks/."""
