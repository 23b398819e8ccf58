"""What one run does: train, evaluate, calibrate, diagnose, predict, segment and export, each through
the run layer (cycleseg.runs).
"""
