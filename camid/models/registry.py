"""Architecture registry: name -> builder + facts (torchvision's `get_model` pattern).

Every builder takes `num_classes` and returns an `nn.Module` mapping (N, 3, H, W) float
images to (N, num_classes) logits. ImageNet initialisation comes only from a local
torchvision weights file in the torch hub cache layout; nothing is ever downloaded.

Evidence heads: a model may also have auxiliary heads, each a
classifier over one kind of evidence. It then has `head_names` (head 0 is the decision),
an `evidence(x)` method returning (N, K, num_classes) logits, and in training mode its
`forward` returns those K heads (the training loss averages them); in eval mode `forward`
returns head 0 only, so every other consumer sees plain logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from camid.errors import IntegrityError, NotFoundError, UsageError
from camid.home import torch_hub_checkpoints
from camid.models.traces import JpegLattice

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchInfo:
    """Facts about one registered architecture."""

    name: str
    builder: Callable[[int], nn.Module]
    input_size: int
    min_input_size: int
    description: str
    imagenet_file: str | None = None
    family: str = "imagenet"

    def to_record(self) -> dict:
        """A flat dict for output."""
        return {
            "name": self.name,
            "family": self.family,
            "input_size": self.input_size,
            "min_input_size": self.min_input_size,
            "imagenet_weights": self.imagenet_file,
            "imagenet_available": bool(self.imagenet_file and imagenet_path(self).is_file()),
            "description": self.description,
        }


_REGISTRY: dict[str, ArchInfo] = {}


def register_model(
    name: str | None = None,
    *,
    input_size: int,
    min_input_size: int,
    description: str,
    imagenet_file: str | None = None,
    family: str = "imagenet",
) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    """Decorator adding a builder to the registry; duplicate names are refused."""

    def wrap(fn: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = ArchInfo(
            key, fn, input_size, min_input_size, description, imagenet_file, family
        )
        return fn

    return wrap


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    return sorted(_REGISTRY)


def get_arch(name: str) -> ArchInfo:
    """Facts about an architecture, or NotFoundError naming the valid choices."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise NotFoundError(
            f"unknown architecture {name!r}; choose one of: {', '.join(list_models())}"
        ) from None


def imagenet_path(info: ArchInfo) -> Path:
    """Where torchvision's cache would hold this architecture's ImageNet weights."""
    if not info.imagenet_file:
        raise UsageError(f"{info.name} has no ImageNet weights")
    return torch_hub_checkpoints() / info.imagenet_file


def get_model(name: str, num_classes: int, *, pretrained: bool = False) -> nn.Module:
    """Build an architecture with a fresh `num_classes` head.

    With `pretrained`, the ImageNet weights are read from the local torch hub cache
    (`$TORCH_HOME/hub/checkpoints/<file>`) with `weights_only=True`; the classification
    head is then replaced. A missing file is a UsageError that says where to put it.
    """
    info = get_arch(name)
    if num_classes < 1:
        raise UsageError("num_classes must be at least 1")
    if not pretrained:
        return info.builder(num_classes)
    path = imagenet_path(info)
    if not path.is_file():
        raise UsageError(
            f"ImageNet weights for {name} not found at {path}; copy torchvision's "
            f"'{info.imagenet_file}' there (camid never downloads), or train from scratch"
        )
    state = load_torch_state_dict(path)
    model = info.builder(1000)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise IntegrityError(path, f"weights do not fit {name}: {str(exc)[:200]}") from exc
    _replace_head(model, num_classes)
    return model


def load_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a torchvision `.pth` state dict safely (no code execution) and check its hash.

    torchvision file names end in the first hex digits of the file's sha256.
    """
    from camid.io.image import sha256_file

    stem = path.stem
    prefix = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    if len(prefix) >= 8 and all(c in "0123456789abcdef" for c in prefix):
        digest = sha256_file(path)
        if not digest.startswith(prefix):
            raise IntegrityError(path, "sha256 does not match the hash in the file name")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle payloads are refused by weights_only=True
        raise IntegrityError(
            path, f"refused: not a plain weights file ({type(exc).__name__})"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IntegrityError(path, "not a state dict of tensors")
    return state


def _replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the final classification layer of a torchvision model for a new one."""
    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):  # resnet, inception
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif hasattr(model, "classifier"):
        cls = model.classifier
        if isinstance(cls, nn.Linear):  # densenet
            model.classifier = nn.Linear(cls.in_features, num_classes)
        elif isinstance(cls, nn.Sequential):  # alexnet, vgg, mobilenet
            for i in range(len(cls) - 1, -1, -1):
                if isinstance(cls[i], nn.Linear):
                    cls[i] = nn.Linear(cls[i].in_features, num_classes)
                    break
    else:  # pragma: no cover - every registered arch is handled above
        raise UsageError(f"cannot replace the head of {type(model).__name__}")


# --- torchvision architectures (paper-size networks, GPU recipe) -----------------------


def _tv(name: str, **kw):
    import torchvision

    return torchvision.models.get_model(name, weights=None, **kw)


@register_model(
    input_size=224,
    min_input_size=32,
    description="ResNet-34 (seed 000)",
    imagenet_file="resnet34-b627a593.pth",
)
def resnet34(num_classes: int) -> nn.Module:
    """ResNet-34."""
    return _tv("resnet34", num_classes=num_classes)


@register_model(
    input_size=224,
    min_input_size=32,
    description="ResNet-101 (seed 000)",
    imagenet_file="resnet101-63fe2227.pth",
)
def resnet101(num_classes: int) -> nn.Module:
    """ResNet-101."""
    return _tv("resnet101", num_classes=num_classes)


@register_model(
    input_size=299,
    min_input_size=75,
    description="Inception-v3 (seed 000), no aux head",
    imagenet_file="inception_v3_google-0cc3c7bd.pth",
)
def inception_v3(num_classes: int) -> nn.Module:
    """Inception-v3 without the auxiliary classifier."""
    return _tv("inception_v3", num_classes=num_classes, aux_logits=False, init_weights=True)


@register_model(
    input_size=224,
    min_input_size=63,
    description="AlexNet (seed 000)",
    imagenet_file="alexnet-owt-7be5be79.pth",
)
def alexnet(num_classes: int) -> nn.Module:
    """AlexNet."""
    return _tv("alexnet", num_classes=num_classes)


@register_model(
    input_size=224,
    min_input_size=32,
    description="VGG-16 (seed 000)",
    imagenet_file="vgg16-397923af.pth",
)
def vgg16(num_classes: int) -> nn.Module:
    """VGG-16."""
    return _tv("vgg16", num_classes=num_classes)


@register_model(
    input_size=480,
    min_input_size=32,
    description="DenseNet-161 (seed 002 winning recipe)",
    imagenet_file="densenet161-8d451a50.pth",
)
def densenet161(num_classes: int) -> nn.Module:
    """DenseNet-161."""
    return _tv("densenet161", num_classes=num_classes)


@register_model(
    input_size=224,
    min_input_size=32,
    description="MobileNet-V2 (light ImageNet net)",
    imagenet_file="mobilenet_v2-b0353104.pth",
)
def mobilenet_v2(num_classes: int) -> nn.Module:
    """MobileNet-V2."""
    return _tv("mobilenet_v2", num_classes=num_classes)


# --- small networks for patches (the CPU path) -----------------------------------------


class HighPass(nn.Module):
    """Fixed per-channel 3x3 residual filter: each pixel minus the mean of its 8 neighbours.

    Suppresses scene content so the network sees the processing traces (demosaicing, noise,
    sharpening, JPEG) first; not trained (a buffer, covered by the weights hash).
    """

    def __init__(self, gain: float = 4.0) -> None:
        super().__init__()
        k = torch.full((3, 1, 3, 3), -1.0 / 8.0)
        k[:, :, 1, 1] = 1.0
        self.register_buffer("weight", k * gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual image, same shape as the input."""
        return nn.functional.conv2d(x, self.weight, padding=1, groups=3)


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 convolution (no bias), batch norm, ReLU: the stage of the patch networks."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PatchNet(nn.Module):
    """A small fully-convolutional camera-trace network for 32-96 px patches.

    The first stage keeps full resolution (no stride, no pooling) so the high-frequency
    traces of demosaicing, denoising and JPEG survive; later stages downsample and a global
    average pool makes the network size-agnostic (patch grids and whole images alike).
    With `highpass`, a fixed residual filter comes first (see HighPass).
    """

    def __init__(self, num_classes: int, width: int = 32, highpass: bool = False) -> None:
        super().__init__()
        self.prefilter = HighPass() if highpass else None

        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 5, padding=2, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            _conv_bn_relu(w, w, 1),
            _conv_bn_relu(w, 2 * w, 2),
            _conv_bn_relu(2 * w, 2 * w, 1),
            _conv_bn_relu(2 * w, 4 * w, 2),
            _conv_bn_relu(4 * w, 4 * w, 1),
            _conv_bn_relu(4 * w, 4 * w, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector (N, 4*width)."""
        if self.prefilter is not None:
            x = self.prefilter(x)
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.classifier(self.embed(x))


@register_model(
    input_size=64,
    min_input_size=16,
    family="patch",
    description="small fully-convolutional net for 32-96 px patches (CPU default, ~0.44 M params)",
)
def patchnet(num_classes: int) -> nn.Module:
    """The CPU default: PatchNet with width 32."""
    return PatchNet(num_classes, width=32)


@register_model(
    input_size=64,
    min_input_size=16,
    family="patch",
    description="tiny PatchNet (width 16, ~0.11 M params) for tests and quick checks",
)
def patchnet_tiny(num_classes: int) -> nn.Module:
    """PatchNet with width 16."""
    return PatchNet(num_classes, width=16)


@register_model(
    input_size=64,
    min_input_size=16,
    family="patch",
    description="PatchNet with a fixed high-pass residual input (width 32): learns camera "
    "traces fastest on CPU",
)
def patchnet_hp(num_classes: int) -> nn.Module:
    """PatchNet (width 32) behind a fixed 3x3 high-pass residual filter."""
    return PatchNet(num_classes, width=32, highpass=True)


@register_model(
    input_size=64,
    min_input_size=16,
    family="patch",
    description="tiny high-pass PatchNet (width 16) for tests and quick CPU runs",
)
def patchnet_hp_tiny(num_classes: int) -> nn.Module:
    """PatchNet (width 16) behind a fixed 3x3 high-pass residual filter."""
    return PatchNet(num_classes, width=16, highpass=True)


class PhasePatchNet(nn.Module):
    """High-pass residual, then a 2x2 pixel-unshuffle so each colour-filter lattice site
    becomes its own channel (phase-aware, and 4x fewer positions to convolve).

    Crops must start on even pixels (the training sampler aligns them to 8) for the lattice
    channels to keep their meaning.
    """

    def __init__(self, num_classes: int, width: int = 48) -> None:
        super().__init__()
        self.prefilter = HighPass()
        self.unshuffle = nn.PixelUnshuffle(2)

        w = width
        self.features = nn.Sequential(
            _conv_bn_relu(12, w, 1),
            _conv_bn_relu(w, w, 1),
            _conv_bn_relu(w, 2 * w, 2),
            _conv_bn_relu(2 * w, 2 * w, 1),
            _conv_bn_relu(2 * w, 4 * w, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector (N, 4*width)."""
        h, w = x.shape[-2:]
        x = self.prefilter(x)[..., : h - h % 2, : w - w % 2]
        return self.pool(self.features(self.unshuffle(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.classifier(self.embed(x))


@register_model(
    input_size=64,
    min_input_size=16,
    family="patch",
    description="phase-aware PatchNet: high-pass + 2x2 pixel-unshuffle (CFA lattice as "
    "channels), width 48; ~2x faster per epoch than patchnet_hp on CPU",
)
def patchnet_phase(num_classes: int) -> nn.Module:
    """PhasePatchNet with width 48."""
    return PhasePatchNet(num_classes, width=48)


class TraceNet(nn.Module):
    """Two kinds of camera trace, pooled over the view and combined by one classifier:

    * pixel traces: `PhasePatchNet`'s high-pass, CFA-lattice-aware convolutional branch
      (demosaicing, denoising, sharpening, sensor noise);
    * compression traces: `JpegLattice` statistics of the luma block DCT (the camera's
      quantisation tables), through a small learned projection.

    Evidence heads: besides the combined classifier, each branch has its own linear head
    trained alongside (deep supervision), so that identify can say what each kind of trace
    points to on its own (the module docstring's evidence heads). Views must be aligned to
    the 8-pixel JPEG grid (camid's crops and grids are).
    """

    head_names = ("combined", "pixels", "compression")

    def __init__(self, num_classes: int, width: int = 48, lattice_dim: int = 64) -> None:
        super().__init__()
        self.pixels = PhasePatchNet(num_classes, width=width)
        del self.pixels.classifier
        self.lattice = JpegLattice()
        self.lattice_head = nn.Sequential(
            nn.BatchNorm1d(self.lattice.n_features),
            nn.Linear(self.lattice.n_features, lattice_dim),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(4 * width + lattice_dim, num_classes)
        self.pixel_classifier = nn.Linear(4 * width, num_classes)
        self.lattice_classifier = nn.Linear(lattice_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector: pixel-trace features then compression-trace features."""
        return torch.cat([self.pixels.embed(x), self.lattice_head(self.lattice(x))], dim=1)

    def evidence(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every head, (N, 3, num_classes): combined, pixels, compression."""
        e = self.embed(x)
        p, q = e[:, : self.pixel_classifier.in_features], e[:, self.pixel_classifier.in_features :]
        return torch.stack(
            [
                self.classifier(e),
                self.pixel_classifier(p),
                self.lattice_classifier(q),
            ],
            dim=1,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes); in training mode all heads (N, 3, num_classes)."""
        out = self.evidence(x)
        return out if self.training else out[:, 0]


@register_model(
    input_size=64,
    min_input_size=16,
    family="patch",
    description="patchnet_phase plus JPEG quantisation-lattice statistics of the luma block "
    "DCT (pixel and compression traces); views aligned to the 8-px JPEG grid",
)
def tracenet(num_classes: int) -> nn.Module:
    """TraceNet with width 48."""
    return TraceNet(num_classes, width=48)


def head_names(model: nn.Module) -> tuple[str, ...] | None:
    """The evidence heads of a model (see the module docstring), or None for plain models."""
    m = getattr(model, "module", model)  # unwrap DistributedDataParallel
    names = getattr(m, "head_names", None)
    return tuple(names) if names and callable(getattr(m, "evidence", None)) else None
