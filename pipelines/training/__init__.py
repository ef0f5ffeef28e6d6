"""The one trainer and its machinery: run directories, checkpoints, tf.distribute, truncated BPTT,
evaluation and export of a trained run, and the metrics tasks report."""
