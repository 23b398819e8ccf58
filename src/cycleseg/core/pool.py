"""The image history buffer of Shrivastava et al. (2017), as used by CycleGAN (SPEC "Training protocol").

D_X is trained on generated images drawn from this buffer rather than only the newest ones, so that it
does not forget the generator's earlier mistakes.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

__all__ = ["ImagePool"]


class ImagePool:
    """Holds up to `capacity` generated images and returns a mix of new and stored ones.

    Until the pool is full every new image is stored and returned as it is. Once full, each new image is,
    with probability 1/2, swapped with a uniformly chosen stored image (the stored one is returned), and
    otherwise returned as it is. capacity = 0 disables the pool.

    Args:
        capacity: number of images kept (50 in the paper).
        seed: seed of the pool's own random generator, so that training is reproducible.
    """

    def __init__(self, capacity: int = 50, seed: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"ImagePool capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.images: list[Tensor] = []
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: Tensor) -> Tensor:
        """images (B, C, H, W), detached from the graph -> (B, C, H, W) for the discriminator."""
        if self.capacity == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.capacity:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.random() < 0.5:
                i = self.rng.randrange(self.capacity)
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "images": list(self.images), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = state["capacity"]
        self.images = list(state["images"])
        self.rng.setstate(state["rng"])
