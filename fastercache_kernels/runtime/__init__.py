"""What every policy shares: the hook engine (engine.py), the block stack observed from a call's data flow
(structure.py), the adaptive policies' block machinery (adaptive.py, blocks.py), forecasting (forecast.py,
forecasting.py) and context parallelism (parallel.py). Each policy's own config and hooks are in policies/<name>/.
Importing it imports no model package."""
