"""`python -m fastercache_kernels bench`: every op runs on every timed backend, the JSON holds the machine, versions,
commit and date, --plot writes a PNG, and bad names fail with a message that names them. Tiny sizes only: speed is
never asserted."""

import datetime
import json

import pytest
import torch

from fastercache_kernels.__main__ import main
from fastercache_kernels.bench import report
from fastercache_kernels.bench.ops import BENCHES, DEFAULT_SHAPES, QUICK_SHAPES, SHAPE_KIND, SHAPES, timed_backends


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    main(["bench", "--numel", "2048", "--repeat", "1", "--dtypes", "fp32", "--json", str(d / "r.json"),
          "--plot", str(d / "r.png"), "--markdown", str(d / "r.md")])
    return json.loads((d / "r.json").read_text()), d / "r.png"


def test_json_records_machine_versions_commit_date(run):
    record, _ = run
    m = record["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["memory_gb"] > 0
    v = record["versions"]
    assert v["torch"] == torch.__version__ and v["python"].count(".") == 2 and "triton" in v
    assert record["commit"] == "unknown" or len(record["commit"].removesuffix("-dirty")) == 40
    assert datetime.datetime.fromisoformat(record["date"]).tzinfo is not None
    assert record["command"].startswith("python -m fastercache_kernels bench --numel 2048")


def test_every_op_on_every_timed_backend(run):
    record, _ = run
    timed, not_timed = timed_backends(torch.device("cpu"))
    assert record["backends"]["timed"] == timed and "reference" in timed
    assert "interpreter" in not_timed["triton"]  # said, not timed
    for op in BENCHES:
        rows = [r for r in record["rows"] if r["op"] == op]
        impls = {r["impl"] for r in rows}
        assert rows and all(f"fk {b}" in impls for b in timed), op
        assert all(r["ms"] > 0 and r["vs_eager"] > 0 for r in rows), op
        if op != "cfg_residual_split":  # an FFT reference, not a memory-bound pass: no copy ratio
            assert all(r["gbps"] > 0 and r["of_copy"] > 0 for r in rows), op


def test_markdown_has_a_line_per_op_and_case(run):
    record, png = run
    lines = (png.parent / "r.md").read_text().splitlines()
    cases = {(r["op"], r["case"]) for r in record["rows"]}
    assert len(lines) == 2 + len(cases) and {line.split(" | ")[0].strip("| ") for line in lines[2:]} == set(BENCHES)


def test_plot_is_a_png(run):
    from PIL import Image

    _, png = run
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width >= 800 and im.height >= 300 * len(BENCHES)


def test_bad_names_say_which_and_list_choices():
    with pytest.raises(SystemExit, match="unknown op.*forecst_typo.*choose from .*forecast"):
        main(["bench", "--ops", "forecast,forecst_typo"])
    with pytest.raises(SystemExit, match="unknown shape.*cogvideo.*choose from .*cogvideox-2b-latent"):
        main(["bench", "--shapes", "cogvideo"])
    with pytest.raises(SystemExit, match="unknown dtype.*fp64"):
        main(["bench", "--dtypes", "fp64"])


def test_named_shape_over_the_memory_budget_is_skipped_and_recorded(tmp_path):
    main(["bench", "--ops", "forecast", "--shapes", "opensora-hidden", "--max-gb", "0.01",
          "--json", str(tmp_path / "r.json")])
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["rows"] == [] and len(record["skipped"]) == 2
    assert record["shapes"]["opensora-hidden"]["dims"] == list(SHAPES["opensora-hidden"].dims)


@pytest.mark.parametrize("flags, shapes, repeat", [([], DEFAULT_SHAPES, 9), (["--quick"], QUICK_SHAPES, 5),
                                                   (["--shapes", "all"], tuple(SHAPES), 9)])
def test_shape_sets(tmp_path, flags, shapes, repeat):
    # a zero memory budget skips every case: the selection is recorded, nothing is allocated or timed
    main(["bench", *flags, "--max-gb", "0", "--json", str(tmp_path / "r.json")])
    record = json.loads((tmp_path / "r.json").read_text())
    assert tuple(record["shapes"]) == shapes and record["repeat"] == repeat and record["rows"] == []
    kinds = {SHAPES[s].kind for s in shapes}
    assert len(record["skipped"]) == 2 * sum(len([s for s in shapes if SHAPES[s].kind == SHAPE_KIND[op]])
                                             for op in BENCHES) and kinds == {"latent", "hidden"}


def test_commit_is_unknown_outside_a_checkout(tmp_path):
    assert report.git_commit(tmp_path) == "unknown"


def test_merge_takes_the_median_of_runs(tmp_path):
    import statistics

    paths = []
    for i in range(2):
        main(["bench", "--ops", "forecast,cfg_residual_split", "--numel", "2048", "--repeat", "1", "--dtypes",
              "fp32", "--json", str(tmp_path / f"{i}.json")])
        paths.append(tmp_path / f"{i}.json")
    main(["bench", "--merge", *map(str, paths), "--json", str(tmp_path / "m.json"), "--plot", str(tmp_path / "m.png")])
    runs = [json.loads(p.read_text()) for p in paths]
    merged = json.loads((tmp_path / "m.json").read_text())
    assert len(merged["merged_from"]) == 2 and merged["machine"] == runs[0]["machine"]
    assert len(merged["rows"]) == len(runs[0]["rows"])
    for r in merged["rows"]:
        ms = [x["ms"] for run_ in runs for x in run_["rows"] if (x["op"], x["case"], x["impl"]) ==
              (r["op"], r["case"], r["impl"])]
        assert r["ms"] == pytest.approx(statistics.median(ms))
        if r["impl"] in ("eager", "spec full call"):
            assert r["vs_eager"] == pytest.approx(1.0)
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
