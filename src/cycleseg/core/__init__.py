"""The paper core: the networks, the noise injection, the losses, the training steps and the metrics.

Plain torch on tensors: no files, no run folders, no command line.
"""
