"""Data sets, the one trainer, evaluation and the task definitions."""
