"""One package per policy: policies/<name>/ holds its config (config.py), its hooks on the engine (hooks.py) and
names the rule and the kernels it uses (its __init__ docstring). runtime/ holds what they share."""
