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
"""

from __future__ import annotations

from PIL import Image
from torchvision import transforms as T

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ToRGB", "build_transforms", "TRANSFORM_KINDS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRANSFORM_KINDS = ("imagenet", "omniglot", "tensor", "none")


class ToRGB:
    """Convert a PIL image to RGB (no-op for RGB images). Picklable, unlike a lambda."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_transforms(
    kind: str,
    train: bool,
    image_size: int | None = None,
    *,
    resize_size: int | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    background: int = 255,
):
    """Build the transform pipeline for a dataset.

    Parameters
    ----------
    kind:
        ``"imagenet"``, ``"omniglot"``, ``"tensor"`` or ``"none"`` (see module doc).
    train:
        Training (with augmentation) or evaluation pipeline.
    image_size:
        Output side length; default 224 for ``"imagenet"``, 28 for ``"omniglot"``.
    resize_size:
        ``"imagenet"`` test only: side of the Resize before CenterCrop
        (default ``round(image_size * 256 / 224)``).
    mean, std:
        ``"imagenet"`` normalisation statistics.
    background:
        ``"omniglot"`` train only: fill value of the affine augmentation (255
        for black ink on white, the default; 0 with ``Omniglot(invert=True)``).

    Returns
    -------
    torchvision.transforms.Compose or None
    """
    kind = str(kind).lower()
    if kind == "none":
        return None
    if kind == "tensor":
        return T.Compose([T.ToTensor()])
    if kind == "imagenet":
        size = 224 if image_size is None else int(image_size)
        if size <= 0:
            raise ValueError(f"image_size must be positive, got {size}")
        norm = T.Normalize(mean, std)
        if train:
            return T.Compose(
                [
                    ToRGB(),
                    T.RandomResizedCrop(size, scale=(0.08, 1.0)),
                    T.RandomHorizontalFlip(),
                    T.ToTensor(),
                    norm,
                ]
            )
        resize = int(round(size * 256 / 224)) if resize_size is None else int(resize_size)
        return T.Compose([ToRGB(), T.Resize(resize), T.CenterCrop(size), T.ToTensor(), norm])
    if kind == "omniglot":
        size = 28 if image_size is None else int(image_size)
        if size <= 0:
            raise ValueError(f"image_size must be positive, got {size}")
        steps = []
        if train:
            steps.append(T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), fill=background))
        steps += [T.Resize((size, size), antialias=True), T.ToTensor()]
        return T.Compose(steps)
    raise ValueError(f"unknown transform kind {kind!r}; expected one of {', '.join(TRANSFORM_KINDS)}")
