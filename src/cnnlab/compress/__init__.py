"""Post-training compression (the lecture's pruning, quantization, weight sharing, binarization), measured."""

from cnnlab.compress.base import CompressError, Compressed, Finetune

__all__ = ["CompressError", "Compressed", "Finetune"]
