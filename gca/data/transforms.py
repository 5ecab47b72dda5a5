"""Image transforms for the metric-learning datasets.

``build_transforms(kind, train, image_size=None)``:

``"imagenet"`` (default size 224), for ImageNet-pretrained backbones:
    train: RandomResizedCrop(size, scale=(0.08, 1)), RandomHorizontalFlip,
    ToTensor, Normalize(ImageNet mean/std);
    test:  Resize(size * 256 / 224) (= 256 for 224), CenterCrop(size),
    ToTensor, Normalize.
    Grayscale inputs are converted to RGB first, so Omniglot can be fed to an
    RGB backbone too.

``"omniglot"`` (default size 28), small grayscale characters:
    train: small RandomAffine (rotation +-10 deg, translation 10 %, scale
    0.9-1.1, filled with the background colour) on the full-resolution image,
    Resize(size), ToTensor;
    test:  Resize(size), ToTensor.
    Output: ``(1, size, size)`` float in [0, 1].

``"tensor"``: ToTensor only (no resize, no augmentation).

``"none"``: ``None`` -- datasets then return PIL images.

Every pipeline first converts the image to the channel count the model expects: ``channels=3`` (RGB,
the ``"imagenet"`` default) or ``channels=1`` (grayscale ``"L"``, the ``"omniglot"`` default). So a folder
of grayscale PNGs feeds an RGB backbone, and a folder of colour photos feeds the 1-channel Omniglot CNN,
without a channel mismatch; pass the backbone's ``in_channels`` to override the default.
"""

from __future__ import annotations

import numbers
from typing import Optional

from PIL import Image
from torchvision import transforms as T

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ToGray", "ToMode", "ToRGB", "build_transforms", "TRANSFORM_KINDS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRANSFORM_KINDS = ("imagenet", "omniglot", "tensor", "none")


_CHANNEL_MODES = {1: "L", 3: "RGB"}


class ToMode:
    """Convert a PIL image to ``mode`` (no-op when it is already). Picklable, unlike a lambda."""

    mode = "RGB"

    def __init__(self, mode: Optional[str] = None) -> None:
        if mode is not None:
            self.mode = mode

    def __call__(self, img: Image.Image) -> Image.Image:
        if not isinstance(img, Image.Image):
            return img  # already a tensor or array: leave it to the rest of the pipeline
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mode!r})"


class ToRGB(ToMode):
    """Convert a PIL image to RGB (no-op for RGB images)."""

    mode = "RGB"

    def __init__(self) -> None:
        super().__init__()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ToGray(ToMode):
    """Convert a PIL image to 8-bit grayscale ``"L"`` (no-op for ``"L"`` images)."""

    mode = "L"

    def __init__(self) -> None:
        super().__init__()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _channel_step(channels: Optional[int], default: Optional[int]):
    channels = default if channels is None else channels
    if channels is None:
        return None
    if isinstance(channels, bool) or not isinstance(channels, int) or channels not in _CHANNEL_MODES:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return ToGray() if channels == 1 else ToRGB()


def build_transforms(
    kind: str,
    train: bool,
    image_size: Optional[int] = None,
    *,
    resize_size: Optional[int] = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    background: int = 255,
    channels: Optional[int] = None,
):
    """Build the transform pipeline for a dataset.

    Args:
        kind: ``"imagenet"``, ``"omniglot"``, ``"tensor"`` or ``"none"`` (see module doc).
        train: Training (with augmentation) or evaluation pipeline.
        image_size: Output side length; default 224 for ``"imagenet"``, 28 for ``"omniglot"``.
        resize_size: ``"imagenet"`` test only: side of the Resize before CenterCrop (default
            ``round(image_size * 256 / 224)``).
        mean, std: ``"imagenet"`` normalisation statistics.
        background: ``"omniglot"`` train only: fill value of the affine augmentation (255 for black ink on white,
            the default; 0 with ``Omniglot(invert=True)``).
        channels: Channels of the output tensor, 1 (grayscale) or 3 (RGB): images of any mode are converted first.
            Default: 3 for ``"imagenet"``, 1 for ``"omniglot"``, unchanged for ``"tensor"``.  A backbone's
            ``in_channels`` attribute is the value to pass.

    Returns:
        torchvision.transforms.Compose or None
    """
    kind = str(kind).lower()
    if kind not in TRANSFORM_KINDS:
        raise ValueError(f"unknown transform kind {kind!r}; expected one of {', '.join(TRANSFORM_KINDS)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral)
                                   or image_size <= 0):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if kind == "none":
        return None
    if kind == "tensor":
        convert = _channel_step(channels, None)
        return T.Compose(([convert] if convert is not None else []) + [T.ToTensor()])
    if kind == "imagenet":
        convert = _channel_step(channels, 3)
        size = 224 if image_size is None else int(image_size)
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if isinstance(convert, ToGray) and len(mean) != 1:
            # one grey channel: the average of the RGB statistics
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        norm = T.Normalize(mean, std)
        if train:
            return T.Compose(
                [
                    convert,
                    T.RandomResizedCrop(size, scale=(0.08, 1.0)),
                    T.RandomHorizontalFlip(),
                    T.ToTensor(),
                    norm,
                ]
            )
        resize = int(round(size * 256 / 224)) if resize_size is None else int(resize_size)
        return T.Compose([convert, T.Resize(resize), T.CenterCrop(size), T.ToTensor(), norm])
    if kind == "omniglot":
        convert = _channel_step(channels, 1)
        size = 28 if image_size is None else int(image_size)
        steps = [convert]
        if train:
            steps.append(T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), fill=background))
        steps += [T.Resize((size, size), antialias=True), T.ToTensor()]
        return T.Compose(steps)
    raise AssertionError(kind)  # pragma: no cover - every kind is handled above
