"""Experiments over many runs: sweeps and their launchers.
"""
