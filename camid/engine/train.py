"""The training loop of `camid train` (and of every command that trains a classifier).

Recipe (seed 002, scaled down for CPUs): per image, random large crops -> an optional
manipulation with p=0.5 (JPEG 70-90, gamma 0.8-1.2, bicubic resize x0.5/0.8/1.5/2.0) ->
the training crop -> optional D4; class-balanced sampling; Adam + ReduceLROnPlateau on the
validation loss; validation split by image; best checkpoint kept; temperature calibration
on the validation views; resumable from an atomic per-epoch checkpoint; DDP under torchrun.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from camid.data.augment import AUGMENT_RECIPES, check_pixel_probe
from camid.data.manifest import Sample
from camid.data.patches import REGIONS, CropRecipe, split_by_image
from camid.device import resolve_device
from camid.engine import dist
from camid.engine.calibration import fit_temperature, open_set_threshold
from camid.engine.data import (
    DEFAULT_CACHE_BYTES,
    BalancedSampler,
    ImageStore,
    TileStore,
    TrainPatches,
    ViewCache,
    ViewSpec,
    collate_patches,
    extract_views,
    plan_store,
    prefetch_map,
    screen_images,
    to_input,
)
from camid.engine.predict import aggregate, autocast_context, decision_logits
from camid.errors import AlreadyExistsError, InputError, InputsError, IntegrityError, UsageError
from camid.home import camid_home
from camid.io.atomic import atomic_write
from camid.models.registry import IMAGENET_MEAN, IMAGENET_STD, get_arch, get_model, head_names
from camid.models.store import ModelCard, check_name, models_dir, resolve_model_path, save_model

TARGETS = ("camera", "label")
CHECKPOINT_FORMAT = 1
DEFAULT_UNKNOWN_THRESHOLD = 0.5
DEFAULT_EPOCHS = 20
DEFAULT_PATIENCE = 8
"""Epochs without a better validation score before an open-ended run (a time budget and
no epoch count) stops."""

ProgressHook = Callable[[dict[str, Any]], None]


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the model card's recipe)."""

    name: str
    arch: str = "tracenet"
    target: str = "camera"
    patch: int | None = None  # training crop; default: the architecture's input size
    large: int | None = None  # large crop before manipulation; default 2 x patch
    patches_per_image: int | None = None  # default 16 for patch nets, 1 for big nets
    epochs: int | None = None  # default 20; None with a time budget: budget or patience
    batch_size: int = 32  # crops per optimiser step (per process)
    lr: float = 1e-3
    weight_decay: float = 0.0
    time_budget: float | None = None  # seconds of training; stops early, keeps the best
    patience: int | None = None  # stop after this many epochs without a better validation
    d4: bool = False
    manipulate: bool = True
    manipulate_p: float = 0.5
    balanced: bool = True
    val_fraction: float = 0.15
    val_views: int = 16  # grid patches per validation image (patch nets)
    region: str = "full"
    seed: int = 0
    workers: int | None = None
    device: str = "auto"
    pretrained: bool = False
    amp: bool = True
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    cache: bool | None = None  # decoded images in memory; None: when they fit
    overwrite: bool = False
    probe: str | None = None  # pixel probe on every crop and view (camid.data.augment)
    augment: str = "seed002"  # training manipulations (camid.data.augment.AUGMENT_RECIPES)
    recipe: str | None = None  # the named recipe this config came from (camid.engine.recipes)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class TrainResult:
    """What a finished run produced."""

    card: ModelCard
    model_path: Path | None
    curve_path: Path | None
    checkpoint_path: Path
    history: list[dict]
    stopped: str
    notes: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # images skipped, not readable


@dataclass
class PreparedData:
    """Training/validation images with integer labels."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    train_y: list[int]
    val_y: list[int]
    notes: list[str]


def target_of(sample: Sample, target: str) -> str | None:
    """The class of a sample for a target column ('camera' or 'label')."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; choose camera or label")
    return sample.camera if target == "camera" else sample.label


def prepare_data(
    samples: Sequence[Sample], target: str, val_fraction: float, seed: int
) -> PreparedData:
    """Drop test rows and rows without a target; split train/val by image, stratified.

    Rows with split=val (or valid/validation) form the validation set when present.
    """
    notes = []
    usable = [s for s in samples if (s.split or "").lower() != "test"]
    if len(usable) < len(samples):
        notes.append(f"{len(samples) - len(usable)} rows with split=test left out of training")
    missing = [s for s in usable if target_of(s, target) is None]
    if missing:
        notes.append(f"{len(missing)} rows without a {target} value skipped")
    usable = [s for s in usable if target_of(s, target) is not None]
    classes = sorted({target_of(s, target) for s in usable})  # type: ignore[type-var]
    if len(classes) < 2:
        raise UsageError(
            f"training needs at least 2 distinct {target} values; found {len(classes)}"
        )
    explicit_val = [s for s in usable if (s.split or "").lower() in ("val", "valid", "validation")]
    if explicit_val:
        val_keys = {str(Path(s.path).resolve()) for s in explicit_val}
        train = [s for s in usable if str(Path(s.path).resolve()) not in val_keys]
        val = [s for s in usable if str(Path(s.path).resolve()) in val_keys]
        notes.append(f"validation = the {len(val)} rows with split=val")
    else:
        keys = [str(Path(s.path).resolve()) for s in usable]
        labels = [target_of(s, target) for s in usable]
        tr, va = split_by_image(keys, labels, val_fraction, seed)  # type: ignore[arg-type]
        train, val = [usable[i] for i in tr], [usable[i] for i in va]
        notes.append(
            f"validation = {len(val)} images held out by image ({val_fraction:.0%} per class)"
        )
    index = {c: i for i, c in enumerate(classes)}
    return PreparedData(
        classes=classes,
        train=train,
        val=val,
        train_y=[index[target_of(s, target)] for s in train],  # type: ignore[index]
        val_y=[index[target_of(s, target)] for s in val],  # type: ignore[index]
        notes=notes,
    )


def dedupe_samples(samples: Sequence[Sample]) -> tuple[list[Sample], str | None]:
    """Rows naming the same file (same resolved path) counted once, the first row kept;
    returns the rows and a warning when there were duplicates."""
    first: dict[str, Sample] = {}
    dupes = conflicts = 0
    for s in samples:
        key = str(Path(s.path).resolve())
        if key not in first:
            first[key] = s
            continue
        dupes += 1
        a = first[key]
        conflicts += (a.camera, a.label, a.split) != (s.camera, s.label, s.split)
    if not dupes:
        return list(samples), None
    note = f"{dupes} row(s) name a file listed before: each file counted once (its first row)"
    if conflicts:
        note += f"; {conflicts} of them disagree with that row on camera, label or split"
    return list(first.values()), note


def readable_data(
    samples: Sequence[Sample], cfg: TrainConfig, emit: ProgressHook, main_rank: bool = True
) -> tuple[PreparedData, dict[Path, np.ndarray], list[str]]:
    """Training data without duplicate rows and without unreadable images.

    Every training and validation image is decoded once up front, so all unreadable ones
    are reported (an "unreadable" event each) before any training; they are skipped when
    the rest still has every class and validation images, else InputsError. A run without
    validation images is refused (it would store an unmeasured, uncalibrated model).
    Returns (data, decoded pixels to reuse, unreadable paths).
    """
    unique, dup_note = dedupe_samples(samples)
    if dup_note and main_rank:
        emit({"event": "warning", "message": dup_note})
    data = prepare_data(unique, cfg.target, cfg.val_fraction, cfg.seed)
    paths = [s.path for s in data.train] + [s.path for s in data.val]
    keep = {None: DEFAULT_CACHE_BYTES, True: 1 << 62, False: 0}[cfg.cache]
    failed, decoded = screen_images(paths, max(1, torch.get_num_threads()), keep)
    if failed:
        if main_rank:
            for p, err in failed.items():
                emit({"event": "unreadable", "path": str(p), "message": _one_line(p, err)})
            emit(
                {
                    "event": "warning",
                    "message": f"{len(failed)} of {len(paths)} images could not be read: "
                    "training without them",
                }
            )
        short = f"{len(failed)} of {len(paths)} images could not be read"
        try:
            rest = prepare_data(
                [s for s in unique if s.path not in failed], cfg.target, cfg.val_fraction, cfg.seed
            )
        except UsageError as exc:
            raise InputsError(f"{short} and the rest does not suffice: {exc}") from exc
        lost = sorted(set(data.classes) - set(rest.classes))
        if lost:
            raise InputsError(f"{short}, among them every image of {', '.join(map(repr, lost))}")
        data = rest
    if not data.val:
        why = (
            "training would store a model with 0 validation images (unmeasured and "
            "uncalibrated): give each class at least 2 images and a validation fraction "
            "above 0, or mark validation rows with split=val"
        )
        raise InputsError(f"{short}; {why}") if failed else UsageError(why)
    return data, decoded, [str(p) for p in failed]


def _one_line(path: Path, err: Exception) -> str:
    """A one-line message naming the file."""
    text = str(err) if isinstance(err, (InputError, IntegrityError)) else f"{path}: {err}"
    return " ".join(text.split())


def run_dir(name: str, home: Path | None = None) -> Path:
    """Folder of a run's resumable checkpoint: <camid_home>/runs/<name>/."""
    d = (home or camid_home()) / "runs" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write the resume state atomically (tensors and plain containers only)."""
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a resume state with weights_only=True (no code can run)."""
    from camid.errors import IntegrityError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IntegrityError(path, f"not a camid resume checkpoint ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise IntegrityError(path, "not a camid resume checkpoint (format)")
    return state


def _resolve_config(cfg: TrainConfig) -> tuple[TrainConfig, str]:
    """Fill architecture-dependent defaults and validate values."""
    check_name(cfg.name)
    info = get_arch(cfg.arch)
    if cfg.target not in TARGETS:
        raise UsageError(f"unknown target {cfg.target!r}; choose camera or label")
    if cfg.region not in REGIONS:
        raise UsageError(f"unknown region {cfg.region!r}; choose one of: {', '.join(REGIONS)}")
    check_pixel_probe(cfg.probe)
    if cfg.augment not in AUGMENT_RECIPES:
        raise UsageError(
            f"unknown augmentation {cfg.augment!r}; choose one of: {', '.join(AUGMENT_RECIPES)}"
        )
    if not 0 <= cfg.manipulate_p <= 1:
        raise UsageError("the manipulation probability must be between 0 and 1")
    patch = cfg.patch or info.input_size
    if patch < info.min_input_size:
        raise UsageError(f"{cfg.arch} needs crops of at least {info.min_input_size} px")
    large = cfg.large or 2 * patch
    if large < patch:
        raise UsageError("the large crop must not be smaller than the training crop")
    ppi = cfg.patches_per_image or (16 if info.family == "patch" else 1)
    open_ended = cfg.epochs is None and cfg.time_budget is not None
    epochs = None if open_ended else (cfg.epochs or DEFAULT_EPOCHS)
    if (epochs is not None and epochs < 1) or cfg.batch_size < 1 or ppi < 1 or not cfg.lr > 0:
        raise UsageError("epochs, batch size, patches per image and lr must be positive")
    if cfg.time_budget is not None and not cfg.time_budget > 0:
        raise UsageError("the time budget must be positive")
    patience = cfg.patience if cfg.patience is not None else (DEFAULT_PATIENCE if open_ended else 0)
    if patience < 0:
        raise UsageError("the patience must be 0 (off) or a number of epochs")
    changes = {
        "patch": patch,
        "large": large,
        "patches_per_image": ppi,
        "epochs": epochs,
        "patience": patience,
    }
    return TrainConfig(**{**asdict(cfg), **changes}), info.family


def _validate(
    model: nn.Module,
    store: ImageStore | ViewCache,
    labels: Sequence[int],
    spec: ViewSpec,
    card: ModelCard,
    device: torch.device,
    info: dist.DistInfo,
    amp: bool,
) -> dict[str, Any]:
    """Per-view logits of every validation image (sharded over ranks, then gathered):
    (V, C), or (V, K, C) for a model with evidence heads."""
    heads = head_names(model)
    mine = list(range(info.rank, len(labels), info.world_size))
    results: list[tuple[int, np.ndarray]] = []
    model.eval()
    with torch.inference_mode():
        views_iter = prefetch_map(lambda i: store.views(i, spec), mine, workers=1)
        for i, views in zip(mine, views_iter, strict=True):
            if isinstance(views, Exception):
                raise views
            x = torch.from_numpy(views).permute(0, 3, 1, 2).to(device)
            with autocast_context(device, amp):
                xin = to_input(x, card.mean, card.std)
                logits = model.evidence(xin) if heads else model(xin)
            results.append((i, logits.float().cpu().numpy()))
    gathered = [r for part in dist.all_gather(results, info) for r in part]
    gathered.sort(key=lambda r: r[0])
    return {i: lg for i, lg in gathered}


def _val_metrics(per_image: dict[int, np.ndarray], labels: Sequence[int]) -> dict[str, float]:
    """Patch-level loss/accuracy and image-level accuracy (soft vote) from view logits."""
    if not per_image:
        return {}
    per_image = {i: decision_logits(lg) for i, lg in per_image.items()}
    all_logits = np.concatenate([per_image[i] for i in sorted(per_image)])
    all_y = np.concatenate([np.full(len(per_image[i]), labels[i]) for i in sorted(per_image)])
    lt = torch.from_numpy(all_logits)
    loss = float(nn.functional.cross_entropy(lt, torch.from_numpy(all_y)).item())
    patch_acc = float((all_logits.argmax(1) == all_y).mean())
    img_ok = [aggregate(per_image[i]).top == labels[i] for i in sorted(per_image)]
    return {
        "val_loss": loss,
        "val_patch_accuracy": patch_acc,
        "val_accuracy": float(np.mean(img_ok)),
    }


def train(
    config: TrainConfig,
    samples: Sequence[Sample],
    *,
    resume: bool = False,
    home: Path | None = None,
    progress: ProgressHook | None = None,
) -> TrainResult:
    """Train a classifier on a dataset's `camera` (or `label`) column and store it.

    Under torchrun every rank calls this; rank 0 writes the checkpoint, model and curve.
    `progress` receives event dicts ("info", "batch", "epoch") for live display.
    """
    cfg, family = _resolve_config(config)
    emit = progress or (lambda ev: None)
    device = resolve_device(cfg.device)
    info = dist.init_distributed(device)
    device = dist.local_device(device, info)
    try:
        return _train(cfg, family, samples, resume, home, emit, device, info)
    finally:
        dist.shutdown(info)


def _train(
    cfg: TrainConfig,
    family: str,
    samples: Sequence[Sample],
    resume: bool,
    home: Path | None,
    emit: ProgressHook,
    device: torch.device,
    info: dist.DistInfo,
) -> TrainResult:
    """The outline: prepare, then per epoch train -> validate -> checkpoint, then the card."""
    run = _prepare(cfg, family, samples, resume, home, emit, device, info)
    emit(_start_event(run))
    t_run = time.perf_counter()
    stopped = "epochs"
    epoch = run.start_epoch - 1
    epochs = range(run.start_epoch, cfg.epochs) if cfg.epochs else itertools.count(epoch + 1)
    for epoch in epochs:
        t_epoch = time.perf_counter()
        stats = _train_one_epoch(run, epoch, t_epoch, t_run)
        per_image, vm = _validate_epoch(run)
        row = _epoch_row(run, epoch, stats, vm, t_epoch)
        run.history.append(row)
        run.scheduler.step(vm.get("val_loss", row["train_loss"]))
        _keep_if_best(run, epoch, vm, per_image)
        elapsed = run.elapsed_before + time.perf_counter() - t_run
        _checkpoint(run, epoch, elapsed)
        emit(
            {
                "event": "epoch",
                **row,
                "best_epoch": run.best["epoch"] if run.best else None,
                "checkpoint": str(run.ckpt_path),
            }
        )
        reason = _stop_reason(run, epoch, row, elapsed, stats.cut_short)
        if reason is not None:
            stopped = reason
            break
    return _finish(run, epoch, stopped, home)


@dataclass
class _Run:
    """Everything a training run carries from one epoch to the next."""

    cfg: TrainConfig
    family: str
    data: PreparedData
    unreadable: list[str]
    card: ModelCard
    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    device: torch.device
    info: dist.DistInfo
    emit: ProgressHook
    dataset: TrainPatches
    sampler: BalancedSampler
    workers: int
    images_per_step: int
    val_store: ImageStore | ViewCache
    val_spec: ViewSpec
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    use_amp: bool
    ckpt_path: Path
    loss_fn: nn.Module = field(default_factory=nn.CrossEntropyLoss)
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict[str, Any] | None = None
    elapsed_before: float = 0.0
    resumed: bool = False


@dataclass
class _EpochStats:
    """What one epoch of training steps saw."""

    seen: int
    loss_sum: float
    correct: int
    train_time: float
    cut_short: bool


def _prepare(
    cfg: TrainConfig,
    family: str,
    samples: Sequence[Sample],
    resume: bool,
    home: Path | None,
    emit: ProgressHook,
    device: torch.device,
    info: dist.DistInfo,
) -> _Run:
    """Data, network, card, stores, optimiser and (with `resume`) the restored state."""
    if not cfg.overwrite and not resume and _in_registry(cfg.name, home):
        raise AlreadyExistsError(f"a model named {cfg.name!r} already exists")
    data, decoded, unreadable = readable_data(samples, cfg, emit, info.is_main)
    for n in data.notes:
        emit({"event": "info", "message": n})
    # seeds first: the network's initial weights depend only on --seed
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))
    model = get_model(cfg.arch, len(data.classes), pretrained=cfg.pretrained)
    mean, std = (
        (list(IMAGENET_MEAN), list(IMAGENET_STD)) if cfg.pretrained else ([0.5] * 3, [0.5] * 3)
    )
    card = ModelCard(
        name=cfg.name,
        arch=cfg.arch,
        classes=data.classes,
        input_size=int(cfg.patch),
        task=cfg.target,
        mean=mean,
        std=std,
    )
    val_spec = ViewSpec(
        size=int(cfg.patch),
        mode="grid" if family == "patch" else "five",
        max_views=cfg.val_views if family == "patch" else 5,
        d4=False,
        region=cfg.region,
        probe=cfg.probe,
    )
    dataset, val_store = _stores(cfg, data, decoded, val_spec, emit)
    sampler = BalancedSampler(
        data.train_y,
        balanced=cfg.balanced,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    workers = (
        cfg.workers
        if cfg.workers is not None
        else (min(8, max(1, (torch.get_num_threads() or 2) - 1)) if device.type == "cuda" else 0)
    )
    model, net, optimizer, scheduler = _optimisation(cfg, model, device, info)
    use_amp = cfg.amp and device.type == "cuda"
    run = _Run(
        cfg=cfg,
        family=family,
        data=data,
        unreadable=unreadable,
        card=card,
        model=model,
        net=net,
        device=device,
        info=info,
        emit=emit,
        dataset=dataset,
        sampler=sampler,
        workers=workers,
        images_per_step=max(1, cfg.batch_size // int(cfg.patches_per_image)),
        val_store=val_store,
        val_spec=val_spec,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        use_amp=use_amp,
        ckpt_path=run_dir(cfg.name, home) / "checkpoint.pt",
    )
    if resume:
        _restore(run)
    return run


def _optimisation(
    cfg: TrainConfig, model: nn.Module, device: torch.device, info: dist.DistInfo
) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, Any]:
    """The model on its device, its DDP wrapper (or itself), Adam and ReduceLROnPlateau."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    return model, net, optimizer, scheduler


def _stores(
    cfg: TrainConfig,
    data: PreparedData,
    decoded: dict[Path, np.ndarray],
    val_spec: ViewSpec,
    emit: ProgressHook,
) -> tuple[TrainPatches, ImageStore | ViewCache]:
    """How the images are held (whole, tiles or decoded each epoch; see `plan_store`):
    the training patch set and the validation views."""
    all_paths = [s.path for s in data.train] + [s.path for s in data.val]
    plan = plan_store(all_paths, int(cfg.large), cfg.cache)
    cache = plan.mode == "cache"
    train_store: ImageStore | TileStore
    if plan.mode == "tiles":
        train_store = TileStore(
            [s.path for s in data.train], plan.tile, plan.per_image, cfg.region, cfg.seed
        )
        emit(
            {
                "event": "info",
                "message": f"images too large to keep whole: decoding {len(data.train)} "
                f"training images once and keeping {plan.per_image} tiles of {plan.tile} px "
                f"each ({train_store.nbytes / 1e6:.0f} MB)",
            }
        )
        train_store.preload(workers=max(1, torch.get_num_threads()))
    else:
        train_store = ImageStore([s.path for s in data.train], cache=cache, decoded=decoded)
    val_images = ImageStore([s.path for s in data.val], cache=cache, decoded=decoded)
    val_store: ImageStore | ViewCache = val_images
    if cache:
        emit({"event": "info", "message": f"decoding {len(all_paths)} images into memory"})
        train_store.preload()
        val_images.preload()
    else:  # validation views never change: take them once
        val_store = ViewCache(val_images, val_spec)
    recipe = CropRecipe(
        patch=int(cfg.patch),
        large=int(cfg.large),
        manipulate_p=cfg.manipulate_p if cfg.manipulate else 0.0,
        d4=cfg.d4,
        region=cfg.region,
        probe=cfg.probe,
        augment=cfg.augment,
    )
    dataset = TrainPatches(train_store, data.train_y, recipe, int(cfg.patches_per_image), cfg.seed)
    return dataset, val_store


def _restore(run: _Run) -> None:
    """Continue from the run's checkpoint: weights, optimiser, scheduler, RNG, history."""
    cfg, path = run.cfg, run.ckpt_path
    if not path.is_file():
        raise UsageError(f"nothing to resume: no checkpoint at {path}")
    state = load_checkpoint(path)
    if (
        state["classes"] != run.data.classes
        or state["config"]["arch"] != cfg.arch
        or (state["config"]["patch"] != cfg.patch)
        or state["config"].get("probe") != cfg.probe
    ):
        raise UsageError(
            "the checkpoint was made with another architecture, patch size, probe or class "
            "list; train afresh instead of resuming"
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.use_amp and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_torch"])
    run.start_epoch = int(state["epoch"]) + 1
    run.history = list(state["history"])
    run.best = state.get("best")
    run.elapsed_before = float(state.get("elapsed", 0.0))
    run.resumed = True
    run.emit({"event": "info", "message": f"resuming after epoch {run.start_epoch} from {path}"})


def _start_event(run: _Run) -> dict[str, Any]:
    return {
        "event": "start",
        "epochs": run.cfg.epochs,
        "start_epoch": run.start_epoch,
        "train_images": len(run.data.train),
        "val_images": len(run.data.val),
        "classes": run.data.classes,
        "device": str(run.device),
        "world_size": run.info.world_size,
        "steps_per_epoch": math.ceil(len(run.sampler) / run.images_per_step),
    }


def _train_one_epoch(run: _Run, epoch: int, t_epoch: float, t_run: float) -> _EpochStats:
    """One pass of optimiser steps over the epoch's sampled images ("batch" events); cut
    short when the time budget runs out (single process only)."""
    cfg, device, info = run.cfg, run.device, run.info
    run.sampler.set_epoch(epoch)
    run.dataset.epoch = epoch
    loader = DataLoader(
        run.dataset,
        batch_size=run.images_per_step,
        sampler=run.sampler,
        num_workers=run.workers,
        collate_fn=collate_patches,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    run.net.train()
    seen, loss_sum, correct = 0, 0.0, 0
    steps = len(loader)
    cut_short = False
    for step, (xb, yb) in enumerate(loader, start=1):
        x = to_input(xb.to(device, non_blocking=True), run.card.mean, run.card.std)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        y = yb.to(device, non_blocking=True)
        run.optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, run.use_amp):
            logits = run.net(x)
            if logits.dim() == 3:  # evidence heads: mean loss, head 0 decides
                loss = torch.stack(
                    [run.loss_fn(logits[:, k], y) for k in range(logits.shape[1])]
                ).mean()
                logits = logits[:, 0]
            else:
                loss = run.loss_fn(logits, y)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        n = int(y.shape[0])
        seen += n
        loss_sum += float(loss.item()) * n
        correct += int((logits.argmax(1) == y).sum().item())
        dt = time.perf_counter() - t_epoch
        run.emit(
            {
                "event": "batch",
                "epoch": epoch + 1,
                "epochs": cfg.epochs,
                "step": step,
                "steps": steps,
                "loss": loss_sum / seen,
                "accuracy": correct / seen,
                "patches_per_s": seen * info.world_size / max(dt, 1e-9),
                "images_per_s": seen * info.world_size / int(cfg.patches_per_image) / max(dt, 1e-9),
                "eta_s": dt / step * (steps - step),
            }
        )
        if (
            cfg.time_budget is not None
            and not info.enabled
            and time.perf_counter() - t_run > cfg.time_budget  # time spent in this run
        ):
            cut_short = True
            break
    return _EpochStats(seen, loss_sum, correct, time.perf_counter() - t_epoch, cut_short)


def _validate_epoch(run: _Run) -> tuple[dict[int, np.ndarray], dict[str, float]]:
    """Validation view logits of every image and the epoch's validation metrics."""
    per_image = _validate(
        run.net.module if run.info.enabled else run.net,
        run.val_store,
        run.data.val_y,
        run.val_spec,
        run.card,
        run.device,
        run.info,
        run.cfg.amp,
    )
    return per_image, _val_metrics(per_image, run.data.val_y)


def _epoch_row(
    run: _Run, epoch: int, stats: _EpochStats, vm: dict[str, float], t_epoch: float
) -> dict[str, Any]:
    """The epoch's line of the history (and of the training curve)."""
    return {
        "epoch": epoch + 1,
        "train_loss": stats.loss_sum / max(stats.seen, 1),
        "train_accuracy": stats.correct / max(stats.seen, 1),
        **vm,
        "lr": run.optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - t_epoch,
        "train_patches_per_s": stats.seen * run.info.world_size / max(stats.train_time, 1e-9),
    }


def _keep_if_best(
    run: _Run, epoch: int, vm: dict[str, float], per_image: dict[int, np.ndarray]
) -> None:
    """Keep the weights and validation logits of the best epoch so far (see `_is_better`)."""
    if _is_better(vm, run.best):
        run.best = {
            "model": _cpu_state(run.model),
            "epoch": epoch + 1,
            "metrics": dict(vm),
            "val_logits": [torch.from_numpy(per_image[i]) for i in sorted(per_image)],
        }


def _checkpoint(run: _Run, epoch: int, elapsed: float) -> None:
    """Write the resume state after an epoch (rank 0), then wait for every rank."""
    if run.info.is_main:
        save_checkpoint(
            run.ckpt_path,
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "config": run.cfg.to_dict(),
                "classes": run.data.classes,
                "model": _cpu_state(run.model),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict() if run.use_amp else {},
                "rng_torch": torch.get_rng_state(),
                "history": run.history,
                "best": run.best,
                "elapsed": elapsed,
            },
        )
    dist.barrier(run.info)


def _stop_reason(
    run: _Run, epoch: int, row: dict[str, Any], elapsed: float, cut_short: bool
) -> str | None:
    """Why training stops after this epoch (before its last one), or None to go on.

    The time budget stops when another epoch would not fit; patience (when set) stops
    after that many epochs without a better validation score (`_is_better`).
    """
    cfg = run.cfg
    if cut_short:
        return "time budget"
    more = cfg.epochs is None or epoch + 1 < cfg.epochs
    if cfg.time_budget is not None:  # a budget is time to spend now: not a resumed run's past
        spent = elapsed - run.elapsed_before
        decision = dist.broadcast(spent + row["seconds"] > cfg.time_budget, run.info)
        if decision and more:
            return "time budget"
    since = epoch + 1 - run.best["epoch"] if run.best else 0
    if cfg.patience and more and since >= cfg.patience:
        run.emit(
            {
                "event": "info",
                "message": f"no better validation score in {since} epochs (best: epoch "
                f"{run.best['epoch'] if run.best else '-'}): stopping",
            }
        )
        return "patience"
    return None


def _finish(run: _Run, epoch: int, stopped: str, home: Path | None) -> TrainResult:
    """The best epoch's weights, calibrated on validation, stored with their card."""
    cfg, model, card, data, history = run.cfg, run.model, run.card, run.data, run.history
    best = run.best
    if best is None:  # no epoch ran (resume of a finished run) or no validation data
        best = {"model": _cpu_state(model), "epoch": epoch + 1, "metrics": {}, "val_logits": []}
    model.load_state_dict(best["model"])
    model.eval()
    card.calibration = _calibrate(best, data.val_y, head_names(model))
    if best.get("val_logits"):
        card.calibration["altered"] = _calibrate_altered(run, model)
    card.metrics = _card_metrics(run, best, stopped)
    card.recipe = _card_recipe(run)
    model_path = curve_path = None
    if run.info.is_main:
        overwrite = cfg.overwrite or run.resumed
        model_path = save_model(model.cpu(), card, home=home, overwrite=overwrite)
        curve_path = models_dir(home) / f"{cfg.name}.curve.png"
        from camid.report.plots import training_curve

        training_curve(
            history,
            curve_path,
            title=f"{cfg.name} ({cfg.arch})",
            best_epoch=best["epoch"],
            manipulated=bool(cfg.manipulate),
        )
    dist.barrier(run.info)
    return TrainResult(
        card, model_path, curve_path, run.ckpt_path, history, stopped, data.notes, run.unreadable
    )


def _card_metrics(run: _Run, best: dict[str, Any], stopped: str) -> dict[str, Any]:
    history = run.history
    last = history[-1] if history else {}
    return {
        **{k: v for k, v in best["metrics"].items()},
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "train_loss": last.get("train_loss"),
        "train_accuracy": last.get("train_accuracy"),
        "train_images": len(run.data.train),
        "val_images": len(run.data.val),
        "unreadable_skipped": len(run.unreadable),
        "seconds": sum(h["seconds"] for h in history),
        "train_patches_per_s": last.get("train_patches_per_s"),
        "stopped": stopped,
        "history": history,
    }


def _card_recipe(run: _Run) -> dict[str, Any]:
    cfg, family = run.cfg, run.family
    return {
        **{
            k: v
            for k, v in cfg.to_dict().items()
            if k not in ("name", "device", "workers", "overwrite", "cache")
        },
        "views": {
            "mode": "grid" if family == "patch" else "five",
            "max_views": 64 if family == "patch" else 5,
            "d4": family != "patch",
            "region": cfg.region,
            "probe": cfg.probe,
        },
        "optimizer": "Adam",
        "scheduler": "ReduceLROnPlateau(val_loss)",
        "world_size": run.info.world_size,
        "device": str(run.device),
    }


def _in_registry(name: str, home: Path | None) -> bool:
    from camid.errors import NotFoundError

    try:
        resolve_model_path(name, home)
    except NotFoundError:
        return False
    return (models_dir(home) / f"{name}.safetensors").exists()


def _is_better(vm: dict[str, float], best: dict[str, Any] | None) -> bool:
    """Higher image accuracy wins; ties go to the lower validation loss."""
    if best is None:
        return True
    if not vm:
        return True  # without validation the latest epoch is kept
    b = best["metrics"]
    if not b:
        return True
    if vm["val_accuracy"] != b["val_accuracy"]:
        return vm["val_accuracy"] > b["val_accuracy"]
    return vm["val_loss"] < b["val_loss"]


def _calibrate(
    best: dict[str, Any], val_y: Sequence[int], heads: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Fit the temperature on the best epoch's validation views; suggest an open-set cut.

    For a model with evidence heads, each auxiliary head gets its own temperature and a
    support threshold (see `_calibrate_heads`).
    """
    raw = [np.asarray(t) for t in best.get("val_logits", [])]
    logits_list = [decision_logits(lg) for lg in raw]
    if not logits_list:
        return {
            "method": "none",
            "temperature": 1.0,
            "aggregation": "mean",
            "unknown_threshold": DEFAULT_UNKNOWN_THRESHOLD,
            "note": "no validation images: uncalibrated",
        }
    logits = np.concatenate(logits_list)
    labels = np.concatenate([np.full(len(lg), y) for lg, y in zip(logits_list, val_y, strict=True)])
    fit = fit_temperature(logits, labels)
    t = fit["temperature"]
    aggs = [aggregate(lg, t) for lg in logits_list]
    maxp = np.array([a.probs.max() for a in aggs])
    agree = np.array([a.agreement for a in aggs])
    right = np.array([a.top == y for a, y in zip(aggs, val_y, strict=True)])
    out = {
        "method": "temperature",
        "level": "view",
        "aggregation": "mean",
        **fit,
        "n_images": len(logits_list),
        "val_image_max_prob": {
            "min": float(maxp.min()),
            "q05": float(np.quantile(maxp, 0.05)),
            "median": float(np.median(maxp)),
        },
        "val_image_agreement_median": float(np.median(agree)),
        "unknown_threshold": open_set_threshold(maxp[right]),
        "unknown_threshold_rule": "0.95 x 5th percentile of correctly identified validation "
        "images' max-probability, clipped to [0.5, 0.95]",
    }
    if heads and raw[0].ndim == 3:
        out["heads"] = _calibrate_heads(raw, val_y, heads, right)
    return out


def _calibrate_altered(run: _Run, model: nn.Module) -> dict[str, Any]:
    """The decision rule for re-saved / resized photos (camid.identify.policy): the pixel
    head's temperature and per-kind thresholds, fitted on altered copies of the validation
    photos viewed as in validation."""
    from camid.identify.policy import PIXEL_HEAD, calibrate_altered, calibration_manipulations

    heads = head_names(model)
    index = heads.index(PIXEL_HEAD) if heads and PIXEL_HEAD in heads else 0
    name = heads[index] if heads else "network"
    store = ImageStore([s.path for s in run.data.val], cache=False)
    logits: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[int]] = {}
    model.eval()
    with torch.inference_mode():
        for i, y in enumerate(run.data.val_y):
            pixels = store.get(i)
            for kind, manips in calibration_manipulations().items():
                for m in manips:
                    views = extract_views(m.apply(pixels), run.val_spec)
                    x = torch.from_numpy(views).permute(0, 3, 1, 2).to(run.device)
                    with autocast_context(run.device, run.cfg.amp):
                        xin = to_input(x, run.card.mean, run.card.std)
                        out = model.evidence(xin) if heads else model(xin)
                    lg = out.float().cpu().numpy()
                    logits.setdefault(kind, []).append(lg[:, index] if lg.ndim == 3 else lg)
                    labels.setdefault(kind, []).append(int(y))
    return calibrate_altered(logits, labels, name)


def _calibrate_heads(
    raw: list[np.ndarray], val_y: Sequence[int], heads: tuple[str, ...], right: np.ndarray
) -> list[dict[str, Any]]:
    """Per auxiliary head: temperature, validation accuracy and a support threshold.

    A head *supports* a decision when it gives the decided class at least
    `support_threshold` probability: half the 5th percentile of what it gave the true class
    of the correctly identified validation images (so ~95 % of known photos pass).
    """
    y = np.asarray(val_y)
    result = []
    for k in range(1, min(len(heads), raw[0].shape[1])):
        lgs = [lg[:, k] for lg in raw]
        labels = np.concatenate([np.full(len(lg), t) for lg, t in zip(lgs, y, strict=True)])
        fit = fit_temperature(np.concatenate(lgs), labels)
        aggs = [aggregate(lg, fit["temperature"]) for lg in lgs]
        true_p = np.array([a.probs[t] for a, t in zip(aggs, y, strict=True)])
        ok = true_p[right] if right.any() else true_p
        result.append(
            {
                "name": heads[k],
                "temperature": fit["temperature"],
                "val_accuracy": float(np.mean([a.top == t for a, t in zip(aggs, y, strict=True)])),
                "support_q05": float(np.quantile(ok, 0.05)),
                "support_threshold": float(np.clip(0.5 * np.quantile(ok, 0.05), 0.0, 0.5)),
            }
        )
    return result
