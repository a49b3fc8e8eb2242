"""Tools around the runtime: the command line, the local stack, the simulator, the demo,
offline evaluation and calibration.
"""
