"""Layers that PyTorch lacks or that cnnlab makes faster (measured)."""

from cnnlab.layers.dropout import Dropout, dropout_mask_bytes

__all__ = ["Dropout", "dropout_mask_bytes"]
