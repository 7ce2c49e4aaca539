"""`compare --compile`: end to end on the trained demo CogVideoX (dynamo's eager backend: no code generation, a
few seconds), the graph check failing on an fk row that breaks the graph, and the command's exit status."""

import json
from dataclasses import asdict

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("skimage")

from fastercache_kernels.bench import compare, compiled  # noqa: E402
from fastercache_kernels.bench.compiled import CompiledMethod, CompiledPoint  # noqa: E402


def test_compile_option_end_to_end(tmp_path):
    from fastercache_kernels.__main__ import main

    main(["compare", "--compile", "--backend", "eager", "--models", "cogvideox", "--steps", "6", "--rounds", "1",
          "--methods", "fk First-Block-Cache 0.1,diffusers FirstBlockCache 0.1", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "compare-compiled.json").read_text())
    rows = {(p["group"], p["method"]): p for p in record["points"]}
    assert sorted(rows) == [("diffusers", "diffusers FirstBlockCache 0.1"), ("diffusers", "no cache (compiled)"),
                            ("diffusers", "no cache (eager)"), ("fk", "fk First-Block-Cache 0.1"),
                            ("fk", "no cache (compiled)"), ("fk", "no cache (eager)")]
    assert record["graph_check"] == [] and record["references_agree"] == {"cogvideox": True}
    for p in rows.values():
        assert p["error"] is None, p["error"]
        assert p["cpu_s"] > 0 and len(p["rounds_cpu_s"]) == 1 and p["repeatable"]
    for group in compiled.GROUPS:  # each process's compiled reference: one graph per call, none compiled while timed
        ref = rows[(group, "no cache (compiled)")]
        assert (ref["graphs_per_call"], ref["graph_breaks"], ref["recompiled_in_rounds"]) == (1.0, 0, 0)
        assert ref["psnr"] == compare.PSNR_CAP and ref["exact"] and ref["speedup"] == pytest.approx(1.0)
    fk = rows[("fk", "fk First-Block-Cache 0.1")]
    assert fk["fullgraph"] and (fk["graphs_per_call"], fk["graph_breaks"], fk["recompiled_in_rounds"]) == (1.0, 0, 0)
    theirs = rows[("diffusers", "diffusers FirstBlockCache 0.1")]
    assert not theirs["fullgraph"] and theirs["graph_breaks"] > 0 and theirs["graphs_per_call"] > 1
    assert "| cogvideox | fk | fk First-Block-Cache 0.1 | fullgraph |" in (tmp_path / "compare-compiled.md").read_text()


def _breaking(fullgraph: bool) -> CompiledMethod:
    """An "fk" row whose model breaks the graph in its first block (what the check must catch)."""
    def apply(target, obj):
        hook = obj.transformer_blocks[0].register_forward_pre_hook(lambda *a: torch._dynamo.graph_break())

        class Handle:
            reset = staticmethod(lambda: None)
            remove = staticmethod(hook.remove)

        return Handle()

    return CompiledMethod(f"fk breaking, fullgraph={fullgraph}", "fk", apply, fullgraph=fullgraph)


def test_graph_check_fails_on_a_graph_break():
    # (in this process: a break in the class's forward also changes how later compiled models of the class run,
    # which is why the command runs fk's rows in a process of their own; the end-to-end test above checks those;
    # dynamo is reset before and after so that no other test sees it)
    target = compare.DemoTarget("cogvideox", clips=1, steps=4)
    methods = [*compiled.all_methods(target)[:2], _breaking(True), _breaking(False)]
    torch._dynamo.reset()
    try:
        points = compiled.run_model(target, methods, rounds=1, backend="eager")
    finally:
        torch._dynamo.reset()
    by_name = {p.method: p for p in points}
    strict = by_name["fk breaking, fullgraph=True"]
    assert strict.error is not None  # fullgraph refuses the break
    assert by_name["fk breaking, fullgraph=False"].graphs_per_call > 1
    bad = compiled.graph_check(points)
    assert [b.split(":")[0] for b in bad] == ["cogvideox fk breaking, fullgraph=True",
                                             "cogvideox fk breaking, fullgraph=False"], bad


def test_the_command_exits_1_when_the_check_fails(monkeypatch, capsys):
    from fastercache_kernels.__main__ import main

    broken = CompiledPoint("cogvideox", "fk something", "fk", True, True, cpu_s=1.0, speedup=1.0,
                           speedup_vs_eager=1.0, psnr=40.0, psnr_vs_eager=40.0, repeatable=True, first_wall_s=1.0,
                           graphs=2, graph_breaks=1, graphs_per_call=2.0, group="fk", video_sha1="x")
    monkeypatch.setattr(compiled, "_run_groups", lambda model, args: [("demo", [asdict(broken)])])
    with pytest.raises(SystemExit) as e:
        main(["compare", "--compile", "--models", "cogvideox"])
    assert e.value.code == 1
    assert "cogvideox fk something: 1 graph break(s), 2.00 graphs per call" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="wan"):
        main(["compare", "--compile", "--models", "wan"])
