"""benchmarks/gpu_check.py: one line and exit 0 without a GPU; on the CPU at a tiny size (--cpu-smoke) every step
runs and lands in its one JSON file (the figures of a real GPU come from running it there)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a CUDA GPU measures instead")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path, capsys):
    assert _gpu_check().main(["--out", str(tmp_path / "gpu.json")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("gpu_check: no CUDA GPU here") and "nothing written" in out[0]
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.slow  # a dozen short processes: make-synthetic, prepare, 4 trainings, the two benchmarks, torchrun
def test_every_step_runs_and_lands_in_one_file(tmp_path):
    out = tmp_path / "gpu.json"
    # a budget no step reaches even on a busy 2-core machine (the real check runs in 540 s on a GPU machine)
    assert _gpu_check().main(["--cpu-smoke", "--iterations", "4", "--budget", "7200", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "skipped" not in json.dumps(report) and "failed" not in json.dumps(report), report
    for name in ("fp32", "fp32, TF32 off"):
        slice_ = report["training"][name]
        assert slice_["iterations"] == 4 and slice_["it_per_s"] > 0 and slice_["peak_memory_mib"] > 0, name
        assert slice_["paper_run_hours"] > 0 and slice_["precision"] == "fp32"
    assert all(r["iterations"] == 4 for r in report["two_runs_one_gpu"].values())
    assert {r["variant"] for r in report["bench_train"]} == {"reference", "defaults (auto)"}
    assert report["bench_infer"] and all(r["device"] == "cpu" for r in report["bench_infer"])
    assert report["torchrun_2_gpus"]["iterations"] == 4
