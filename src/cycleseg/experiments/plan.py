"""The plan of a sweep: which runs there are, where each lives, in which order, and what to do with each.

Every launcher (in-process, local subprocesses, Slurm job arrays) takes its runs from here and only executes
them; nothing below repeats a rule of this module:

- `find_configs`: the YAML configs of the sources, by name; `check_request`: what is refused before planning;
- `plan`: one `RunSpec` per config (and seed), in dependency order (a Gaussian run whose SNR is taken `from`
  another run of the sweep comes after that run, `depends_on` names it);
- `seed_dir` / `seed_of`: the folder of seed k's run (SWEEP_DIR/NAME/seed<k>/) and back;
- `snr_source`: the one parser of `noise.snr_db: from RUN`; `resolve`: that SNR measured;
- `decide`: skip, continue, train anew or train a run folder ("done", "continue", "retrain", "new");
- `run_status`: where a run folder stands (the status display reads it too).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cycleseg import runs
from cycleseg.config import (  # snr_source: plan's callers read it here (tests patch plan.snr_source)
    RESUMABLE_KEYS,
    Config,
    config_from_dict,
    flat_items,
    load_config,
    snr_source,
)
from cycleseg.config_files import read_config_file
from cycleseg.errors import ConfigError, DataError, RunError

__all__ = ["ACTIONS", "MAX_SEEDS", "RunSpec", "SweepEntry", "check_request", "decide", "find_configs", "plan",
           "resolve", "resumable_overrides", "run_status", "seed_dir", "seed_of", "snr_source", "status_before"]

MAX_SEEDS = 1000  # a larger --seeds is a typo, not a study: refused before any planning
ACTIONS = ("new", "continue", "retrain", "done")  # what `decide` answers (and "unknown" when told not to measure)
_DIGITS = re.compile(r"\d+$")


def seed_dir(seed: int) -> str:
    """The folder name of seed `seed`'s run inside a config's folder: seed0, seed1, ..."""
    return f"seed{seed}"


def seed_of(folder: str) -> int | None:
    """The seed of a run folder named by `seed_dir` ("seed3" -> 3), or None for any other name (also "seed03")."""
    digits = _DIGITS.search(folder)
    seed = int(digits.group()) if digits else None
    return seed if seed is not None and seed_dir(seed) == folder else None  # seed_dir alone says what the names are


@dataclass
class SweepEntry:
    """One config of a sweep: its name (the YAML file's stem, also its folder in the sweep) and file."""

    name: str
    config: Path
    seed: int | None = None  # None: a sweep without seeds (SWEEP_DIR/NAME/ is the run)

    @property
    def run_name(self) -> str:
        """"quant2", or "quant2/seed1" in a seeded sweep: the run directory relative to the sweep folder."""
        return self.name if self.seed is None else f"{self.name}/{seed_dir(self.seed)}"

    def run_dir(self, sweep_dir: Path) -> Path:
        return Path(sweep_dir) / self.run_name


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep, planned: everything a launcher needs to execute it, nothing it has to work out."""

    name: str  # "quant2" or "quant2/seed1": the run folder relative to the sweep folder; the key of sweep.json
    config_name: str  # the config's name (its YAML file's stem)
    config_path: Path  # the YAML file
    seed: int | None  # None: a sweep without seeds
    config: Config  # the YAML file with `overrides` applied (a `from` SNR not resolved yet: `resolve`)
    overrides: tuple[str, ...]  # everything on top of the YAML file: the sweep's, data.root, the seed, the SNR source
    run_dir: Path
    sweep_dir: Path  # where `noise.snr_db: from NAME` looks for NAME
    depends_on: str | None = None  # the name of the run of this sweep whose measured SNR this run takes
    index: int = 1  # 1-based position in the sweep

    @classmethod
    def load(cls, name: str, config_path: str | Path, overrides: Sequence[str], run_dir: str | Path,
             sweep_dir: str | Path, **fields: Any) -> RunSpec:
        """A RunSpec with its config loaded from `config_path` and `overrides` (ConfigError naming the key)."""
        overrides = tuple(overrides)
        return cls(name, fields.pop("config_name", Path(config_path).stem), Path(config_path), fields.pop("seed", None),
                   load_config(config_path, list(overrides)), overrides, Path(run_dir), Path(sweep_dir), **fields)


def find_configs(sources: list[Path], only: list[str] | None = None) -> list[SweepEntry]:
    """The YAML configs in `sources` (folders or files), in sweep order.

    Runs whose Gaussian SNR is taken `from` another run go last, so that run is trained first.
    """
    paths: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():  # a file named _*.yaml is a base of the others (`base: _base.yaml`), not a run
            found = sorted(p for p in src.glob("*.yaml") if not p.name.startswith("_"))
            if not found:
                raise ConfigError(f"{src}: no *.yaml configs in this folder")
            paths += found
        elif src.is_file():
            paths.append(src)
        else:
            raise ConfigError(f"{src}: config file or folder not found")
    entries = [SweepEntry(p.stem, p) for p in paths]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"configs with the same name {', '.join(dup)}: each run needs its own folder name")
    if only is not None and not only:
        raise ConfigError(f"--only: no config names given; name one or more of {', '.join(names)}, separated by "
                          "commas (or leave --only out to run them all)")
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ConfigError(f"--only {','.join(unknown)}: no such config; choose from {', '.join(names)}")
        entries = [e for e in entries if e.name in only]
    return sorted(entries, key=lambda e: _snr_in_file(e.config) is not None)


def check_request(entries: list[SweepEntry], overrides: list[str], seeds: int | None) -> None:
    """What every launcher checks before planning (which loads every config once per seed): the number of seeds,
    no train.seed override beside --seeds, and the first config's data folder (its data.root, or --data)."""
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds {seeds}: must be 1 to {MAX_SEEDS} (each seed trains every config once more)")
    if seeds is not None and any(o.partition("=")[0].strip() == "train.seed" for o in overrides):
        raise ConfigError("--seeds sets train.seed of each run (0..N-1); drop the train.seed override")
    if entries:
        root = Path(load_config(entries[0].config, overrides).data.root)
        if not root.is_dir():
            raise DataError(f"{root}: data folder not found; pass the dataset with --data (e.g. `cycleseg "
                            "make-synthetic data/synthetic` first) or set data.root in the configs")


# ------------------------------------------------------------------------------------------------- the plan

def plan(sources: Sequence[SweepEntry | str | Path], sweep_dir: str | Path, overrides: Sequence[str] = (),
         seeds: int | Sequence[int] | None = None) -> list[RunSpec]:
    """One RunSpec per config of `sources` (entries or YAML paths) and seed, in the order to run them.

    Seed-major (a whole Table 2 of seed 0 first); within a seed, each config after the config whose SNR it takes
    (`order`). `seeds`: N (seeds 0..N-1), the seeds themselves, or None (SWEEP_DIR/NAME/ is the run). With seeds,
    `noise.snr_db: from OTHER` (OTHER a config of the sweep or a folder in SWEEP_DIR) becomes
    `from SWEEP_DIR/OTHER/seed<k>`: seed k's Gaussian run takes the SNR of seed k's OTHER.
    """
    sweep_dir = Path(sweep_dir)
    entries = order([e if isinstance(e, SweepEntry) else SweepEntry(Path(e).stem, Path(e)) for e in sources],
                    overrides)
    names = {e.name for e in entries}
    seed_list = [None] if seeds is None else range(seeds) if isinstance(seeds, int) else list(seeds)
    specs: list[RunSpec] = []
    for seed in seed_list:
        for entry in entries:
            entry = dataclasses.replace(entry, seed=seed)
            extra = [*overrides, *([f"train.seed={seed}"] if seed is not None else [])]
            cfg = load_config(entry.config, extra)
            source, depends = snr_source(cfg.noise.snr_db), None
            if source is not None and not Path(source).is_absolute():
                if seed is not None and (source in names or (sweep_dir / source).is_dir()):
                    # the same seed's run of that config: seed k's Gaussian run takes the SNR of seed k's quantizer
                    extra.append(f"noise.snr_db={json.dumps(f'from {sweep_dir / source / seed_dir(seed)}')}")
                    cfg = load_config(entry.config, extra)
                if source in names and source != entry.name:
                    depends = source if seed is None else f"{source}/{seed_dir(seed)}"
            specs.append(RunSpec(entry.run_name, entry.name, entry.config, seed, cfg, tuple(extra),
                                 entry.run_dir(sweep_dir), sweep_dir, depends, len(specs) + 1))
    return _link_absolute(specs)


def order(entries: list[SweepEntry], overrides: Sequence[str] = ()) -> list[SweepEntry]:
    """`entries` with each config whose SNR comes `from` another config of the sweep after that config (also
    when the `from` is given as an override); otherwise in the given order. ConfigError for a cycle."""
    names = {e.name for e in entries}
    needs: dict[str, str | None] = {}
    for e in entries:
        source = snr_source(load_config(e.config, list(overrides)).noise.snr_db)
        needs[e.name] = source if source in names and source != e.name else None
    done: list[SweepEntry] = []
    left = list(entries)
    while left:
        ready = [e for e in left if needs[e.name] is None or needs[e.name] in {d.name for d in done}]
        if not ready:
            cycle = ", ".join(f"{e.name} from {needs[e.name]}" for e in left)
            raise ConfigError(f"noise.snr_db: the configs take their SNR from each other ({cycle}); one of them "
                              "needs a number")
        done += ready
        left = [e for e in left if e not in ready]
    return done


def _link_absolute(specs: list[RunSpec]) -> list[RunSpec]:
    """`depends_on` for a `from` that names a run folder of this sweep by its absolute path."""
    by_dir = {str(s.run_dir.absolute()): s.name for s in specs}
    linked = []
    for s in specs:
        source = snr_source(s.config.noise.snr_db)
        target = by_dir.get(str(Path(source))) if source and Path(source).is_absolute() else None
        if s.depends_on is None and target not in (None, s.name):
            s = dataclasses.replace(s, depends_on=target)
        linked.append(s)
    return linked


def _snr_in_file(path: Path) -> str | None:
    """The `from` source of a YAML file's noise.snr_db, read as the config loader reads it (read_config_file:
    ConfigError naming a file that is not UTF-8, not YAML or not a mapping) but not validated yet."""
    raw = read_config_file(path)
    noise = raw.get("noise")
    return snr_source(noise.get("snr_db")) if isinstance(noise, dict) else None


# ------------------------------------------------------------------------------------------------ deciding

def run_status(run_dir: Path) -> str:
    """"done" (trained and evaluated on val at its last step), "trained" (not evaluated), "interrupted" (created,
    not finished) or "new": the state of runs.summary, which decides it for every reader."""
    return runs.summary(run_dir).state


def resolve(spec: RunSpec, measure: bool = True) -> RunSpec | None:
    """`spec` with its `noise.snr_db: from RUN` replaced by the SNR measured for RUN (calibrating RUN if needed);
    `spec` itself when its SNR is a number. `measure=False`: nothing is computed, None when RUN has no
    calibration yet. ConfigError when RUN has no trained run."""
    source = snr_source(spec.config.noise.snr_db)
    if source is None:
        return spec
    from cycleseg.commands.calibrate import calibration_path, resolve_snr_from  # the training stack, when needed

    if not measure:
        found = next((p for p in (Path(source), spec.sweep_dir / source) if (p / runs.LAST).is_file()), None)
        if found is None or not calibration_path(found).is_file():
            return None
    return dataclasses.replace(spec, config=resolve_snr_from(spec.config, base_dir=spec.sweep_dir))


def decide(spec: RunSpec, retrain: bool, *, measure: bool = True) -> str:
    """What to do with `spec`'s run folder: "new" (nothing there: train it), "continue" (interrupted: continue it
    exactly from last.pt; trained: evaluate it), "retrain" (made with other settings, and `retrain`: train it
    anew) or "done" (trained and evaluated with these settings: skip it).

    A run made with other settings (outside config.RESUMABLE_KEYS) without `retrain`: RunError naming the key.
    `measure=False` computes nothing: a run whose `from` SNR is not measured yet gives "unknown" (the run's own
    process decides once it has measured it)."""
    status = run_status(spec.run_dir)
    if status == "new":
        return "new"
    resolved = resolve(spec, measure)
    if resolved is None:
        return "unknown"
    if _differs(spec.run_dir, resolved.config, retrain):
        return "retrain"
    return "done" if status == "done" else "continue"


def status_before(spec: RunSpec, action: str) -> str:
    """What a run summary records as the run's state before the launcher touched it: "retrain" or "unknown" as
    decided, else run_status ("new", "interrupted", "trained", "done")."""
    return action if action in ("retrain", "unknown") else run_status(spec.run_dir)


def resumable_overrides(cfg: Config) -> list[str]:
    """This sweep's values of the keys a continued run may take from it (where the data is, the device, ...)."""
    values = dict(flat_items(cfg.to_dict()))
    return [f"{k}={json.dumps(values[k])}" for k in RESUMABLE_KEYS]


def _differs(run_dir: Path, cfg: Config, retrain: bool) -> bool:
    """Whether the run in `run_dir` was made with other settings than `cfg` asks for: RunError naming the key,
    or True with `retrain`."""
    path = run_dir / runs.LAST
    if not path.is_file():
        path = run_dir / runs.CONFIG  # a run that never reached its first checkpoint
        saved = runs.read_yaml(path) if path.is_file() else None
    else:
        saved = runs.load_checkpoint(path, mmap=True)["config"]  # the config only: tensors stay on disk
    if saved is None:
        return False
    diff = runs.config_difference(config_from_dict(saved, source=str(path)), cfg)
    if diff is None:
        return False
    if retrain:
        return True
    key, then, now = diff
    raise RunError(f"{run_dir}: this run was made with {key}={then!r}, the sweep now asks for {now!r}; rerun "
                   f"with the same overrides, pass --retrain to train it anew, or choose another --out")
