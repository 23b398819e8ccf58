"""A shared run never runs code (issue 27): checkpoints are read with torch.load(weights_only=True) only, a planted
pickle is refused by every reader with one line naming the file, checkpoints of cycleseg 0.1.0 are refused until
`cycleseg upgrade --trust-checkpoint` rewrites them (resume stays bit-identical), decompression bombs and YAML tags
are refused."""

import random
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import cycleseg
from cycleseg import runs
from cycleseg.cli import main
from cycleseg.commands.state import TrainState
from cycleseg.config import load_config
from cycleseg.data.cityscapes import MAX_IMAGE_PIXELS, open_image
from cycleseg.data.classes import load_classes
from cycleseg.errors import ConfigError, DataError, RunError, UnsafeCheckpoint
from cycleseg.runs import BEST, LAST, load_checkpoint, save_checkpoint, upgrade_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src" / "cycleseg"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
V1, V2 = "cycleseg-checkpoint-v1", "cycleseg-checkpoint-v2"
# the overrides the session fixture trained_cycle_run was made with
FIXTURE = ["data.height=32", "data.width=64", "optim.epochs=1", "optim.decay_start_epoch=0", "train.progress=false"]


class _Plant:
    """Unpickling this runs Python code that creates `marker`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _plant(path: Path, state: dict, marker: Path) -> None:
    """Write `state` (with the current format marker) plus a planted object to `path`, as torch.save does."""
    torch.save({**state, "format": V2, "note": _Plant(marker)}, path)


def _png_header(path: Path, width: int, height: int) -> Path:
    """A grey PNG that claims width x height pixels in a few dozen bytes (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------------ source and loaders

def test_every_checkpoint_read_in_src_is_a_safe_load():
    """No unsafe deserialisation anywhere in the package: every torch.load passes weights_only=True."""
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for pattern in (r"weights_only\s*=\s*False", r"pickle\.loads?\(", r"yaml\.(?:load|unsafe_load|full_load)\(",
                        r"allow_pickle\s*=\s*True", r"yaml\.(?:Unsafe|Full)?Loader\b"):
            assert not re.search(pattern, text), f"{path.name}: {pattern}"
        for call in re.finditer(r"torch\.load\(", text):
            args = text[call.end():text.index(")", call.end())]
            assert "weights_only=True" in args, f"{path.name}: torch.load({args})"


def test_a_planted_pickle_is_refused_even_with_trust(tmp_path):
    marker, path = tmp_path / "PWNED", tmp_path / "last.pt"
    _plant(path, {"progress": {"step": 3}}, marker)
    torch.load(path, weights_only=False)  # the plant is live: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    for trust in (False, True):
        with pytest.raises(RunError, match=rf"^{re.escape(str(path))}: refused: .*builtins\.exec") as e:
            load_checkpoint(path, trust=trust)
        assert "\n" not in str(e.value)
        with pytest.raises(RunError, match="refused"):
            upgrade_checkpoint(path, trust=trust)
    with pytest.raises(UnsafeCheckpoint):  # never read as "no checkpoint there"
        runs.checkpoint_step(path)
    assert main(["upgrade", str(tmp_path), "--trust-checkpoint"]) == 1
    assert not marker.exists()


def test_save_refuses_what_a_safe_load_would_refuse(tmp_path):
    """A NumPy scalar in the metrics would make the whole file unreadable: the save names it, writes nothing."""
    with pytest.raises(TypeError, match=r"checkpoint\.metrics\.miou is a numpy\.float64"):
        save_checkpoint(tmp_path / "x.pt", {"metrics": {"miou": np.float64(0.5)}})
    assert not (tmp_path / "x.pt").exists()
    save_checkpoint(tmp_path / "x.pt", {"metrics": {"miou": 0.5}, "t": torch.ones(2), "s": (1, [None, "a"])})
    assert load_checkpoint(tmp_path / "x.pt")["s"] == (1, [None, "a"])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "x.pt") == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_state_with_a_non_finite_weight_is_not_saved_and_the_last_checkpoint_is_kept(tmp_path, bad):
    state = _state()
    state.save(tmp_path / LAST)
    kept = (tmp_path / LAST).read_bytes()
    name, param = list(state.models.named_parameters())[5]
    with torch.no_grad():
        param.view(-1)[3] = bad
    with pytest.raises(RunError, match=rf"parameter {re.escape(name)} is not finite; not writing a checkpoint"):
        state.save(tmp_path / LAST)
    assert (tmp_path / LAST).read_bytes() == kept


# ------------------------------------------------------------------------------------ checkpoints of 0.1.0

def _state(seed: int = 0) -> TrainState:
    cfg = load_config(CONFIGS / "erfnet.yaml", ["data.height=32", "data.width=64", "train.precision=fp32",
                                                  "optim.pool_size=2", f"train.seed={seed}"])
    return TrainState(cfg, torch.device("cpu"))


def _draws(state: TrainState) -> tuple:
    """The next numbers of every RNG a resumed run uses."""
    return (torch.rand(4).tolist(), random.random(), np.random.rand(3).tolist(), state.pool.rng.random(),
            [x.sum().item() for x in state.pool.query(torch.arange(24.0).reshape(2, 3, 2, 2))])


def test_a_v1_checkpoint_is_refused_then_upgraded_to_a_bit_identical_state(tmp_path):
    """A last.pt as cycleseg 0.1.0 wrote it (NumPy's RNG state as an ndarray, saved with torch.save) is refused
    with the way out; `upgrade --trust-checkpoint` rewrites it; the state read from the new file continues every
    RNG and the pool exactly as the original run would have."""
    original = _state()
    original.pool.query(torch.randn(3, 3, 2, 2))  # fills the pool, advances its RNG
    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    old = original.state_dict()
    old["rng"]["numpy"] = np.random.get_state()
    path = tmp_path / "run" / LAST
    path.parent.mkdir()
    torch.save({"format": V1, "version": "0.1.0", **old}, path)
    expected = _draws(original)  # what the uninterrupted run draws next
    before = path.read_bytes()

    with pytest.raises(RunError, match=rf"^{re.escape(str(path))}: a checkpoint of cycleseg 0\.1\.0 .*cycleseg upgrade "
                                       rf"{re.escape(str(path))} --trust-checkpoint"):
        load_checkpoint(path)
    with pytest.raises(RunError, match="cycleseg upgrade"):
        _state().load(path)  # train --resume
    assert main(["upgrade", str(path.parent)]) == 1 and path.read_bytes() == before  # no flag: untouched
    trusted = load_checkpoint(path, trust=True)
    assert trusted["format"] == V1 and trusted["rng"]["numpy"]["key"].dtype == torch.int64

    assert main(["upgrade", str(path.parent), "--trust-checkpoint"]) == 0
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    upgraded = load_checkpoint(path)
    assert upgraded["format"] == V2 and upgraded["version"] == "0.1.0"
    assert not list(path.parent.glob("*.tmp"))
    assert main(["upgrade", str(path)]) == 0  # nothing left to do

    for source in (trusted, None):
        resumed = _state(seed=1)  # other weights and seeds: everything must come from the file
        resumed.load_state_dict(trusted, source="v1") if source is not None else resumed.load(path)
        for (name, a), b in zip(original.models.state_dict().items(), resumed.models.state_dict().values(),
                                strict=True):
            assert torch.equal(a, b), name
        assert _draws(resumed) == expected


# ------------------------------------------------------------------------------------------ every reader

@pytest.fixture(scope="module")
def planted(trained_cycle_run, tmp_path_factory):
    """A sweep folder whose run quant2 (a copy of trained_cycle_run) has a planted best.pt and last.pt, a planted
    checkpoint file outside it, and the marker file the plants would create."""
    root = tmp_path_factory.mktemp("planted")
    run = root / "sweep" / "quant2"
    shutil.copytree(trained_cycle_run, run)
    marker = root / "PWNED"
    _plant(root / "weights.pt", load_checkpoint(run / BEST), marker)
    for name in (BEST, LAST):
        _plant(run / name, load_checkpoint(run / name), marker)
    return run, marker, root


def _readers(run: Path, data: Path, root: Path) -> dict[str, list]:
    image = next((data / "leftImg8bit" / "val").rglob("*.png"), None)
    quant2 = str(CONFIGS / "demo" / "quant2.yaml")
    return {
        "segment": ["segment", run, image, "--out", root / "seg"],
        "segment last": ["segment", run, image, "--out", root / "seg", "--checkpoint", "last"],
        "evaluate": ["evaluate", run, "--data", data],
        "evaluate best": ["evaluate", run, "--data", data, "--checkpoint", BEST],
        "predict": ["predict", run, "--data", data, "--out", root / "pred"],
        "export": ["export", run, "--onnx", root / "g.onnx", "--no-check"],
        "diagnose": ["diagnose", run, "--data", data, "--max-images", "1"],
        "diagnose along training": ["diagnose", run, "--data", data, "--max-images", "1", "--along-training"],
        "calibrate": ["calibrate", run, "--data", data],
        "report": ["report", run.parent, "--data", data],
        "train --init-from file": ["train", quant2, "--data", data, "--out", root / "new", "--init-from",
                                   root / "weights.pt", *FIXTURE],
        "train --init-from run": ["train", quant2, "--data", data, "--out", root / "new", "--init-from", run,
                                  *FIXTURE],
        "train --resume": ["train", "--resume", run],
        "sweep": ["sweep", quant2, "--data", data, "--out", run.parent, *FIXTURE],
        "upgrade --trust-checkpoint": ["upgrade", run, "--trust-checkpoint"],
    }


READERS = list(_readers(Path("r"), Path("d"), Path("o")))


@pytest.mark.slow
@pytest.mark.parametrize("reader", READERS)
def test_no_command_runs_a_planted_checkpoint(planted, tiny_data, capsys, reader):
    """Each command exits non-zero with one line naming the planted file; the marker never appears."""
    run, marker, root = planted
    argv = [str(a) for a in _readers(run, tiny_data, root)[reader]]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any(re.search(rf"{re.escape(str(run))}/(best|last)\.pt: refused|weights\.pt: refused", line)
               for line in err), err
    if reader != "upgrade --trust-checkpoint":  # upgrade names each file it did not rewrite, then a summary
        assert len(err) == 1, err
    assert not marker.exists()


@pytest.mark.slow
def test_the_python_api_and_the_slurm_worker_refuse_a_planted_checkpoint(planted, tiny_data):
    from cycleseg.experiments.launchers.slurm_job import SlurmTask, _torchrun_plan

    run, marker, _ = planted
    for kwargs in ({}, {"checkpoint": "last"}, {"trust": True}):
        with pytest.raises(RunError, match=rf"^{re.escape(str(run))}/(best|last)\.pt: refused"):
            cycleseg.load(run, device="cpu", **kwargs)
    task = SlurmTask(name="quant2", config=str(CONFIGS / "demo" / "quant2.yaml"), run_dir=str(run),
                     overrides=tuple(FIXTURE), data_root=str(tiny_data))
    with pytest.raises(RunError, match=rf"^{re.escape(str(run / LAST))}: refused"):
        _torchrun_plan(task)  # what each array task reads before it trains
    assert not marker.exists()


# ----------------------------------------------------------------------------------- other shared inputs

def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    """An image over MAX_IMAGE_PIXELS (and one over Pillow's own hard limit) is refused before decoding."""
    over = _png_header(tmp_path / "over.png", 13_000, MAX_IMAGE_PIXELS // 13_000 + 1)  # just over ours
    bomb = _png_header(tmp_path / "bomb.png", 30_000, 30_000)  # over Pillow's too
    for path in (over, bomb):
        assert path.stat().st_size < 200
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: image of .*150 megapixels") as e:
            open_image(path)
        assert "\n" not in str(e.value)
    assert "13000x11539 pixels" in str(pytest.raises(DataError, open_image, over).value)


@pytest.mark.slow
def test_segment_and_check_data_refuse_a_bomb(trained_cycle_run, tiny_data, tmp_path, capsys):
    bomb = _png_header(tmp_path / "bomb.png", 30_000, 30_000)
    assert main(["segment", str(trained_cycle_run), str(bomb), "--out", str(tmp_path / "seg")]) == 2
    assert re.fullmatch(rf"cycleseg segment: error: {re.escape(str(bomb))}: image of .*150 megapixels.*\n",
                        capsys.readouterr().err)
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = next((data / "leftImg8bit" / "val").rglob("*.png"))
    _png_header(victim, 13_000, 12_000)
    assert main(["check-data", str(data), "--fast"]) == 1
    err = capsys.readouterr().err
    assert f"{victim}: image of 13000x12000 pixels, more than the 150 megapixels" in err


def test_yaml_files_of_a_run_or_dataset_are_read_safely(tmp_path):
    """config.yaml and classes.yaml with a Python tag are an error naming the file, never a call."""
    marker = tmp_path / "PWNED"
    evil = f"!!python/object/apply:os.system ['touch {marker}']\n"
    (tmp_path / "config.yaml").write_text(evil)
    (tmp_path / "classes.yaml").write_text(f"classes: {evil}")
    with pytest.raises(RunError, match=r"config\.yaml: not readable YAML"):
        runs.read_yaml(tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match=r"config\.yaml:1:1: not valid YAML"):
        load_config(tmp_path / "config.yaml")
    with pytest.raises(DataError, match=r"classes\.yaml:1:10: not valid YAML"):
        load_classes(tmp_path / "classes.yaml")
    assert not marker.exists()


def test_a_planted_symlink_never_redirects_a_write(tmp_path):
    """A run folder may bring `eval_val.json.tmp -> ~/.bashrc`: the write replaces the link, not the file."""
    victim = tmp_path / "victim"
    victim.write_text("the user's file\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_val.json.tmp").symlink_to(victim)
    runs.write_json(run / "eval_val.json", {"miou": 1.0})
    assert victim.read_text() == "the user's file\n"
    assert runs.read_json(run / "eval_val.json") == {"miou": 1.0} and not (run / "eval_val.json.tmp").exists()
