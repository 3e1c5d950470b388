"""RoIAlign whose backward is one multi-threaded sparse-dense product.

The forward is torchvision's ``roi_align`` (same output). torchvision's CPU backward is a
single-threaded loop over every (RoI, channel, bin, sample); here the backward builds, from the
RoIs alone, the sparse bilinear sampling matrix ``A`` (rows: RoI x bin, columns: pixels of the
feature map; entry: the bin's bilinear weights on that pixel summed over its samples, divided by
their number) and computes ``grad_input = A^T @ grad_output`` with torch's sparse (COO) product,
all channels at once (rows of C channels, channels-last).
The sample positions and weights follow torchvision's CPU kernel (``roi_align_kernel.cpp``):

* the box, scaled by ``spatial_scale`` (in double), minus 0.5 when ``aligned``; its size is at
  least 1 when not ``aligned``;
* ``sampling_ratio > 0``: that many samples per bin and axis, else ``ceil(roi size / bins)``;
* a sample with ``y < -1`` or ``y > H`` (or ``x < -1`` or ``x > W``) contributes nothing;
  ``y <= 0`` is moved to 0; ``y_low >= H - 1`` gives ``y_low = y_high = H - 1``, ``y = y_low``.

Used only on CPU where a gradient is needed (training); without one (inference, tracing for
export) and on other devices (torchvision's CUDA backward is already parallel) the module calls
torchvision directly.
"""
from __future__ import annotations

import torch
from detectron2.layers import ROIAlign
from torchvision.ops import roi_align

__all__ = ["FastBackwardROIAlign", "roi_align_sampling_matrix"]


def _axis_window(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, bins: int, size: int):
    """Bilinear weights along one axis, summed over each bin's samples, on a window of pixels.

    ``start``, ``bin_size`` (R,) float32 (the RoI's first coordinate and bin size on this axis);
    ``grid`` (R,) int64 samples per bin; ``bins`` bins per RoI; ``size`` the map's extent on this
    axis. Returns ``origin`` (R, bins) int64 (first pixel of each bin's window) and ``weight``
    (R, bins, K) float32: the sum, over the bin's samples, of their weight on pixel ``origin + k``
    (0 for samples outside [-1, size])."""
    r = start.shape[0]
    g_max = max(int(grid.max()), 1)
    p = torch.arange(bins, device=start.device).to(start.dtype)
    i = torch.arange(g_max, device=start.device).to(start.dtype)
    gf = grid.clamp(min=1).to(start.dtype)[:, None, None]  # grid 0: no sample is used
    # Same operation order as torchvision's kernel: start + p * bin + (i + .5) * bin / grid.
    c = (start[:, None] + p * bin_size[:, None])[:, :, None] + (i + 0.5) * bin_size[:, None, None] / gf
    used = (c >= -1.0) & (c <= size) & (torch.arange(g_max, device=start.device) < grid[:, None, None])
    c = c.clamp(min=0.0)
    low = c.to(torch.int64)  # truncation, c >= 0
    top = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(top, low, low + 1)
    frac = torch.where(top, torch.zeros_like(c), c - low.to(c.dtype))
    zero = torch.zeros_like(c)
    origin = low.masked_fill(~used, size).amin(2).clamp(max=size - 1)  # (R, bins) lowest pixel sampled
    k = int((high - origin[:, :, None]).masked_fill(~used, 0).max()) + 1
    weight = torch.zeros(r, bins, k, dtype=c.dtype, device=c.device)
    weight.scatter_add_(2, (low - origin[:, :, None]) * used, torch.where(used, 1.0 - frac, zero))
    weight.scatter_add_(2, (high - origin[:, :, None]) * used, torch.where(used, frac, zero))
    return origin, weight


def roi_align_sampling_matrix(rois: torch.Tensor, shape: tuple[int, int, int], output_size: tuple[int, int],
                              spatial_scale: float, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """The transposed sampling matrix of torchvision's RoIAlign as a sparse COO tensor.

    ``rois`` (R, 5): batch index, x0, y0, x1, y1 (image coordinates); ``shape`` (N, H, W) of the
    feature map; ``output_size`` (PH, PW). Returns ``A^T`` of shape (N*H*W, R*PH*PW), float32:
    ``roi_align(x)[r, c, ph, pw] = sum_k A[r*PH*PW + ph*PW + pw, k] * x_nhwc.view(N*H*W, C)[k, c]``.
    The weights are separable (weight_y * weight_x / samples), so each axis is done on its own.
    """
    n, height, width = shape
    ph_n, pw_n = output_size
    r = rois.shape[0]
    if r == 0:
        return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64, device=rois.device),
                                       torch.zeros(0, device=rois.device), (n * height * width, 0))
    offset = 0.5 if aligned else 0.0
    box = (rois[:, 1:].double() * spatial_scale - offset).float()  # (R, 4) x0 y0 x1 y1
    roi_w, roi_h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / pw_n, roi_h / ph_n
    if sampling_ratio > 0:
        gw = torch.full((r,), sampling_ratio, dtype=torch.int64, device=rois.device)
        gh = gw
    else:
        gw = torch.ceil(roi_w / pw_n).to(torch.int64).clamp(min=0)
        gh = torch.ceil(roi_h / ph_n).to(torch.int64).clamp(min=0)
    count = (gh * gw).clamp(min=1).float()
    oy, wy = _axis_window(box[:, 1], bin_h, gh, ph_n, height)  # (R, PH), (R, PH, KY)
    ox, wx = _axis_window(box[:, 0], bin_w, gw, pw_n, width)  # (R, PW), (R, PW, KX)
    ky, kx = wy.shape[2], wx.shape[2]
    # (R, PH, PW, KY, KX) entries of A; zero weight where a window runs past the map.
    vals = wy[:, :, None, :, None] * wx[:, None, :, None, :] / count[:, None, None, None, None]
    flat = vals.view(-1).nonzero().squeeze(1)  # kept entries, index into (R, PH, PW, KY, KX)
    jx = flat % kx
    t = flat // kx
    jy = t % ky
    row = t // ky  # r * PH * PW + ph * PW + pw
    roi, pw = row // (ph_n * pw_n), row % pw_n
    ph = (row // pw_n) % ph_n
    y = oy[roi, ph] + jy
    x = ox[roi, pw] + jx
    col = (rois[roi, 0].to(torch.int64) * height + y) * width + x
    return torch.sparse_coo_tensor(torch.stack([col, row]), vals.view(-1)[flat], (n * height * width, r * ph_n * pw_n),
                                   check_invariants=False)


class _ROIAlignFunction(torch.autograd.Function):
    """torchvision's ``roi_align`` forward; backward as ``A^T @ grad_output`` (no gradient for the RoIs)."""

    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.params = (tuple(input.shape), input.dtype, output_size, spatial_scale, sampling_ratio, aligned)
        return roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad_output):
        (rois,) = ctx.saved_tensors
        (n, c, h, w), dtype, output_size, spatial_scale, sampling_ratio, aligned = ctx.params
        if rois.shape[0] == 0:
            return grad_output.new_zeros((n, c, h, w), dtype=dtype), None, None, None, None, None
        a_t = roi_align_sampling_matrix(rois, (n, h, w), output_size, spatial_scale, sampling_ratio, aligned)
        g = grad_output.float().permute(0, 2, 3, 1).reshape(-1, c)  # (R*PH*PW, C)
        grad = torch.sparse.mm(a_t, g)  # (N*H*W, C)
        grad = grad.view(n, h, w, c).permute(0, 3, 1, 2).to(dtype)
        return grad, None, None, None, None, None


class FastBackwardROIAlign(ROIAlign):
    """Detectron2's :class:`ROIAlign` (same arguments and output) with the sparse-product backward
    on CPU when a gradient is needed. ``input`` (N, C, H, W), ``rois`` (R, 5) -> (R, C, PH, PW)."""

    def forward(self, input, rois):
        if not (torch.is_grad_enabled() and input.requires_grad) or input.device.type != "cpu" \
                or torch.jit.is_tracing() or torch.jit.is_scripting() or input.is_quantized:
            return super().forward(input, rois)
        assert rois.dim() == 2 and rois.size(1) == 5
        size = self.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return _ROIAlignFunction.apply(input, rois.to(dtype=input.dtype), size, float(self.spatial_scale),
                                       int(self.sampling_ratio), bool(self.aligned))
