"""The gradient lab (`rnnkit lab gradients`): vanishing and exploding gradients on synthetic
long-range problems."""
