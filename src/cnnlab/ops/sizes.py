"""Output-size arithmetic (Dumoulin & Visin, "A guide to convolution arithmetic for deep learning",
2016), with PyTorch's conventions."""

from __future__ import annotations

from cnnlab.ops._args import OpArgumentError, ntuple, padding_pairs

__all__ = ["conv_output_size", "pool_output_size", "conv_transpose_output_size"]


def _pair(padding, kernel: int, dilation: int, stride: int, size: int) -> tuple[int, int]:
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        return padding_pairs(tuple(padding), 1, (kernel,), (dilation,), (stride,), (size,))[0]
    return padding_pairs(padding, 1, (kernel,), (dilation,), (stride,), (size,))[0]


def conv_output_size(size: int, kernel: int, *, stride: int = 1, padding=0, dilation: int = 1) -> int:
    """Output length of a convolution along one dimension:
    ``floor((size + before + after - dilation * (kernel - 1) - 1) / stride) + 1``.

    ``padding``: an int (both sides), ``(before, after)``, or ``"valid"``/``"same"``/``"full"``.
    Raises ``ValueError`` when the (dilated) kernel is larger than the padded input.
    """
    (size,) = ntuple(size, 1, "size")
    (kernel,) = ntuple(kernel, 1, "kernel")
    (stride,) = ntuple(stride, 1, "stride")
    (dilation,) = ntuple(dilation, 1, "dilation")
    before, after = _pair(padding, kernel, dilation, stride, size)
    span = size + before + after
    eff = dilation * (kernel - 1) + 1
    if eff > span:
        raise OpArgumentError(f"kernel {kernel} (dilation {dilation}: spans {eff}) is larger than the padded "
                              f"input {span} (size {size} + padding {before}+{after}); it must be at most {span}")
    return (span - eff) // stride + 1


def pool_output_size(size: int, kernel: int, *, stride: int | None = None, padding: int = 0,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of max/average pooling along one dimension (stride defaults to the kernel).

    ``ceil_mode`` rounds up, but (as in PyTorch) drops a last window that would start in the right
    padding; it may leave a window that overhangs the input (even a kernel larger than the padded
    input, when at least one window starts inside it). PyTorch also requires ``padding <= kernel // 2``.
    """
    (size,) = ntuple(size, 1, "size")
    (kernel,) = ntuple(kernel, 1, "kernel_size")
    (stride,) = ntuple(kernel if stride is None else stride, 1, "stride")
    (padding,) = ntuple(padding, 1, "padding", minimum=0)
    (dilation,) = ntuple(dilation, 1, "dilation")
    if padding > kernel // 2:
        raise OpArgumentError(f"padding {padding} must be at most half the kernel size ({kernel} // 2 = {kernel // 2})")
    eff = dilation * (kernel - 1) + 1
    span = size + 2 * padding
    out = (span - eff + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise OpArgumentError(f"kernel_size {kernel} (dilation {dilation}: spans {eff}) is larger than the padded "
                              f"input {span}; it must be at most {span}" + ("" if ceil_mode else " (or use ceil_mode)"))
    return out


def conv_transpose_output_size(size: int, kernel: int, *, stride: int = 1, padding: int = 0,
                               output_padding: int = 0, dilation: int = 1) -> int:
    """Output length of a transposed convolution (``nn.ConvTranspose2d``) along one dimension:
    ``(size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``."""
    (size,) = ntuple(size, 1, "size")
    (kernel,) = ntuple(kernel, 1, "kernel")
    (stride,) = ntuple(stride, 1, "stride")
    (padding,) = ntuple(padding, 1, "padding", minimum=0)
    (output_padding,) = ntuple(output_padding, 1, "output_padding", minimum=0)
    (dilation,) = ntuple(dilation, 1, "dilation")
    if output_padding >= max(stride, dilation):
        raise OpArgumentError(f"output_padding {output_padding} must be smaller than stride ({stride}) or "
                              f"dilation ({dilation})")
    out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if out < 1:
        raise OpArgumentError(f"padding {padding} is too large: the output size would be {out}")
    return out
