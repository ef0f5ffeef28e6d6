"""Recurrent layers written as Keras 3 layers, and builders for the four I/O architectures."""
