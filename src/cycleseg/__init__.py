"""cycleseg: cycle-consistent semantic segmentation with noise injection into the latent segmentation space.

Implements Löhdefink & Fingscheidt, "Improving Performance of Semantic Segmentation CycleGANs by Noise
Injection into the Latent Segmentation Space" (as fixed by the project's SPEC).
"""

__version__ = "0.1.0"
