"""cycleseg: cycle-consistent semantic segmentation with noise injection into the latent segmentation space.

Implements Löhdefink & Fingscheidt, "Improving Performance of Semantic Segmentation CycleGANs by Noise
Injection into the Latent Segmentation Space" (as fixed by the project's SPEC).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cycleseg.version import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from cycleseg.commands.segment import Segmenter

__all__ = ["__version__", "load"]


def load(run_dir: str | Path, checkpoint: str = "last", device: str = "auto", precision: str = "auto",
         trust: bool = False) -> Segmenter:
    """A trained run as a segmenter: `cycleseg.load(run_dir).segment(image)` -> (H, W) class indices.

    Reads tensors and plain data only, never code; `trust=True` also reads a checkpoint of cycleseg 0.1.0.

    See `cycleseg.commands.segment` (imported here on first use, so that `import cycleseg` stays light).
    """
    from cycleseg.commands.segment import load as _load

    return _load(run_dir, checkpoint, device, precision, trust=trust)
