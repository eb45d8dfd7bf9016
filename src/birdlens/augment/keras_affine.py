"""Keras ``ImageDataGenerator`` geometry as a torchvision v2 transform.

The study augmented with ``ImageDataGenerator(rotation_range=40, width_shift_range=0.2,
height_shift_range=0.2, zoom_range=0.2, horizontal_flip=True)``. torchvision's ``RandomAffine`` cannot
reproduce it: Keras draws the two zoom factors independently (anisotropic) and fills with the edge pixel
(``fill_mode='nearest'``), so this module samples Keras' parameters and applies one bilinear warp with
``grid_sample(padding_mode='border')`` (border = replicate edge, which is scipy's ``'nearest'`` mode).

Keras semantics (keras-preprocessing ``get_random_transform`` / ``apply_affine_transform``):

* ``theta ~ U(-rotation_range, rotation_range)`` degrees;
* ``tx ~ U(-h, h) * H`` pixels (from ``height_shift_range``), ``ty ~ U(-w, w) * W`` (``width_shift_range``);
* ``zx, zy ~ U(1 - zoom_range, 1 + zoom_range)`` drawn independently;
* flip left-right with probability 0.5 (applied after the warp).

The warp is inverse-mapped as in scipy: the output pixel ``o`` (row, col) samples the input at
``c + R(theta) (Z (o - c) + t)`` with ``Z = diag(zx, zy)``, ``t = (tx, ty)`` and ``c`` the image centre.
Hence ``z > 1`` shrinks the content by ``1/z`` (zooms *out*), a positive ``tx`` moves content *up* by
``tx`` pixels and a positive ``ty`` moves it *left*, and a positive ``theta`` turns it clockwise on screen.
Differences from Keras, all below a pixel or invisible to training: ``c`` is the true pixel centre
``((H-1)/2, (W-1)/2)`` (old Keras used ``H/2 + 0.5``), and newer Keras versions swap which axis ``tx``/``zx``
act on - with the study's equal ranges on square images both give the same distribution of transforms.
"""

from __future__ import annotations

import math
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

# Coordinates, not pixels: warping them is not implemented (no stage needs it), so refuse loudly.
_GEOMETRY_TYPES = tuple(
    t
    for t in (getattr(tv_tensors, "BoundingBoxes", None), getattr(tv_tensors, "KeyPoints", None))
    if t is not None
)


class KerasRandomAffine(v2.Transform):
    """Random rotation, shift, independent x/y zoom and horizontal flip with Keras' ranges and semantics."""

    def __init__(
        self,
        rotation_range: float = 40.0,
        width_shift_range: float = 0.2,
        height_shift_range: float = 0.2,
        zoom_range: float | tuple[float, float] = 0.2,
        horizontal_flip: bool = True,
    ) -> None:
        super().__init__()
        if rotation_range < 0 or width_shift_range < 0 or height_shift_range < 0:
            raise ValueError("rotation_range and the shift ranges must be >= 0")
        if not (width_shift_range < 1 and height_shift_range < 1):
            raise ValueError("shift ranges are fractions of the image size: use values below 1 (e.g. 0.2)")
        zr = (
            (1.0 - zoom_range, 1.0 + zoom_range)
            if isinstance(zoom_range, (int, float))
            else tuple(zoom_range)
        )
        if len(zr) != 2 or not 0 < zr[0] <= zr[1]:
            raise ValueError(
                f"zoom_range must be a float in [0, 1) or a (low, high) pair with 0 < low <= high, got {zoom_range!r}"
            )
        self.rotation_range = float(rotation_range)
        self.width_shift_range = float(width_shift_range)
        self.height_shift_range = float(height_shift_range)
        self.zoom_range: tuple[float, float] = (float(zr[0]), float(zr[1]))
        self.horizontal_flip = bool(horizontal_flip)

    def sample_params(
        self, height: int, width: int, n: int | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Draw Keras' parameters: ``theta`` (degrees), ``tx``/``ty`` (pixels), ``zx``/``zy``, ``flip`` (bool).

        With ``n`` each value is a tensor of ``n`` independent draws (for checking the distributions);
        without, 0-d tensors.
        """
        shape = (n,) if n is not None else ()

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=torch.float64)

        r, hs, ws = self.rotation_range, self.height_shift_range, self.width_shift_range
        return {
            "theta": u(-r, r),
            "tx": u(-hs, hs) * height,
            "ty": u(-ws, ws) * width,
            "zx": u(*self.zoom_range),
            "zy": u(*self.zoom_range),
            "flip": (torch.rand(shape, generator=generator) < 0.5) & self.horizontal_flip,
        }

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _query_size(flat_inputs)
        return self.sample_params(height, width)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, _GEOMETRY_TYPES):
            raise TypeError(
                "KerasRandomAffine warps images and masks only; boxes/keypoints are not supported."
            )
        if isinstance(inpt, PIL.Image.Image):
            out = apply_keras_affine(TF.pil_to_tensor(inpt), **params)
            return TF.to_pil_image(out)
        if isinstance(inpt, torch.Tensor) and inpt.ndim >= 2:
            mode = "nearest" if isinstance(inpt, tv_tensors.Mask) else "bilinear"
            out = apply_keras_affine(inpt.as_subclass(torch.Tensor), mode=mode, **params)
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out
        return inpt

    def extra_repr(self) -> str:
        return (
            f"rotation_range={self.rotation_range}, width_shift_range={self.width_shift_range}, "
            f"height_shift_range={self.height_shift_range}, zoom_range={self.zoom_range}, "
            f"horizontal_flip={self.horizontal_flip}"
        )


def _query_size(flat_inputs: list[Any]) -> tuple[int, int]:
    for inpt in flat_inputs:
        if isinstance(inpt, (PIL.Image.Image, tv_tensors.Image, tv_tensors.Video)) or (
            isinstance(inpt, torch.Tensor) and not isinstance(inpt, tv_tensors.TVTensor) and inpt.ndim >= 2
        ):
            h, w = TF.get_size(inpt)
            return int(h), int(w)
    raise TypeError("KerasRandomAffine needs an image (PIL, tv_tensors.Image or a [..., C, H, W] tensor)")


def keras_affine_matrix(
    theta: float, tx: float, ty: float, zx: float, zy: float, height: int, width: int
) -> torch.Tensor:
    """The 2x3 ``affine_grid`` matrix (normalised x=col, y=row coordinates) for Keras' parameters."""
    a = math.radians(float(theta))
    cos, sin = math.cos(a), math.sin(a)
    # Keras' (row, col) rotation [[cos, -sin], [sin, cos]] written in (x=col, y=row) order.
    rot = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64)
    zoom = torch.diag(torch.tensor([float(zy), float(zx)], dtype=torch.float64))  # zy acts on columns
    shift = torch.tensor([float(ty), float(tx)], dtype=torch.float64)
    half = torch.diag(torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64))
    half_inv = torch.linalg.inv(half)
    mat = torch.empty(2, 3, dtype=torch.float64)
    mat[:, :2] = half_inv @ rot @ zoom @ half
    mat[:, 2] = half_inv @ rot @ shift
    return mat


def apply_keras_affine(
    img: torch.Tensor,
    theta: float | torch.Tensor = 0.0,
    tx: float | torch.Tensor = 0.0,
    ty: float | torch.Tensor = 0.0,
    zx: float | torch.Tensor = 1.0,
    zy: float | torch.Tensor = 1.0,
    flip: bool | torch.Tensor = False,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Apply one Keras-style warp (+ optional left-right flip) to ``[..., C, H, W]``; dtype is kept."""
    if img.ndim < 2:
        raise ValueError(f"expected an image tensor [..., H, W], got shape {tuple(img.shape)}")
    h, w = img.shape[-2:]
    lead = img.shape[:-3] if img.ndim >= 3 else ()
    x = img.reshape(-1, *img.shape[-3:]) if img.ndim >= 3 else img[None, None]
    dtype = x.dtype
    xf = x if dtype == torch.float64 else x.float()  # float64 stays exact (reference checks)
    mat = keras_affine_matrix(float(theta), float(tx), float(ty), float(zx), float(zy), h, w).to(xf.dtype)
    grid = F.affine_grid(mat.unsqueeze(0).expand(xf.shape[0], 2, 3), list(xf.shape), align_corners=False)
    out = F.grid_sample(xf, grid, mode=mode, padding_mode="border", align_corners=False)
    if bool(flip):
        out = out.flip(-1)
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        out = out.round_().clamp_(info.min, info.max)
    out = out.to(dtype)
    return out.reshape(*lead, *out.shape[-3:]) if img.ndim >= 3 else out[0, 0]
