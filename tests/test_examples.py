"""python/ examples: each runs on its tiny random pipeline (real diffusers classes, no download) in a subprocess,
writes its frames and reports reused calls."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "python"
FRAMES = {"cogvideox_example.py": 9, "latte_example.py": 8}  # 9 frames -> 3 latent frames; Latte: video_length 8


def _run(script: str, out: Path, *args: str) -> str:
    res = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(out), *args], check=False,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def _stats(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("stats: "))[len("stats: "):])


@pytest.mark.parametrize("script, policy", [("cogvideox_example.py", "preset"), ("latte_example.py", "preset"),
                                            ("latte_example.py", "diffusers")])
def test_example_writes_frames_and_reuses(tmp_path, script, policy):
    from PIL import Image

    out = _run(script, tmp_path, "--policy", policy)
    pngs = sorted(tmp_path.glob("frame_*.png"))
    assert len(pngs) == FRAMES[script]
    with Image.open(tmp_path / "video.gif") as gif:
        assert gif.n_frames == FRAMES[script]
    s = _stats(out)
    assert s["calls"] == 50 and s["cfg"]["skip"] > 0 and s["cfg"]["full"] > 0
    assert sum(k["reused"] for k in s["attention"].values()) > 0
    assert s["cache_bytes"] > 0


def test_example_without_policy_reports_no_cache(tmp_path):
    out = _run("cogvideox_example.py", tmp_path, "--policy", "none", "--steps", "3")
    assert "no cache" in out and "stats: " not in out
    assert len(list(tmp_path.glob("frame_*.png"))) == FRAMES["cogvideox_example.py"]


def test_wan_example_per_branch(tmp_path):
    """WanPipeline calls the transformer once per CFG branch: the skipped branch is rebuilt without a model call."""
    s = _stats(_run("wan_example.py", tmp_path, "--policy", "preset", "--steps", "30"))
    assert len(list(tmp_path.glob("frame_*.png"))) == 9
    assert s["calls"] == 60 and s["calls_per_kind"]["skip/reconstruct [uncond]"] > 0
    assert sum(k["reused"] for k in s["attention"].values()) > 0
