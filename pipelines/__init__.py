"""Data sets, tasks, the one trainer and the gradient lab, one folder per role.

datasets/ reads data (TFDS builders, named data sets, a user's files); tasks/ defines what is
trained (one module per task; the registry in tasks/__init__.py); training/ trains, evaluates and
exports any task; config.py is the one configuration mechanism all of them share.
"""
