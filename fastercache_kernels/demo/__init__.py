"""The embedded default of the main job: a synthetic video set, two tiny video DiTs of real diffusers classes
(Latte and CogVideoX) trained on it, a CFG sampler and fidelity metrics."""
