"""Realism checks of the synthetic cameras: the traces are real but subtle.

- PRNU identifies the *device*: the known pattern correlates with that device's flat-field
  residuals, not with its twin's (same model).
- Camera models are NOT separable by mean colour, yet a small CNN learns them from 32 px
  patches (texture traces: demosaicing, denoising/sharpening, JPEG).
- The printer (label) difference of the bottle task is learnable at full resolution.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from camid.synth import (
    PRINTERS,
    bottle_scene,
    default_spec,
    device_prnu,
    flat_field_scene,
    natural_scene,
    simulate,
)

SPEC = default_spec()
N_CAM = len(SPEC.cameras)


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_prnu_pattern_identifies_the_device_not_only_the_model():
    shape = (192, 192)
    for cam in SPEC.cameras:
        ks = [device_prnu(cam, d, shape) for d in range(cam.devices)]
        for d in range(cam.devices):
            num = np.zeros(shape)
            den = np.zeros(shape)
            for k in range(6):
                rng = np.random.default_rng([17, d, k])
                px, _ = simulate(flat_field_scene(shape, rng), cam, d, rng, exposure_ev=1.3)
                grey = px.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
                resid = grey - ndimage.gaussian_filter(grey, 1.5)  # a simple high-pass
                num += resid * grey
                den += grey * grey
            est = num / den
            own = _ncc(est, ks[d])
            twin = _ncc(est, ks[1 - d])
            assert own > 0.2, (cam.id, d, own)
            assert abs(twin) < 0.05, (cam.id, d, twin)


def _natural_shots(n_per_cam: int, shape: tuple[int, int], seed: int):
    shots = []
    for ci, cam in enumerate(SPEC.cameras):
        for k in range(n_per_cam):
            rng = np.random.default_rng([seed, ci, k])
            px, _ = simulate(natural_scene(shape, rng), cam, k % cam.devices, rng)
            shots.append((px, ci, k))
    return shots


def test_camera_models_are_not_separable_by_mean_colour():
    shots = _natural_shots(40, (72, 96), seed=7)
    x = np.array([px.reshape(-1, 3).mean(axis=0) for px, _, _ in shots])
    y = np.array([ci for _, ci, _ in shots])
    order = np.random.default_rng(0).permutation(len(y))
    folds = np.array_split(order, 5)
    hits_centroid = hits_logistic = 0
    for fold in folds:
        train = np.setdiff1d(order, fold)
        mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
        z = (x - mu) / sd
        cents = np.stack([z[train][y[train] == c].mean(axis=0) for c in range(N_CAM)])
        pred = ((z[fold][:, None, :] - cents[None]) ** 2).sum(-1).argmin(axis=1)
        hits_centroid += int((pred == y[fold]).sum())
        lin = nn.Linear(3, N_CAM)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=100)
        zt = torch.tensor(z[train], dtype=torch.float32)
        yt = torch.tensor(y[train])

        def closure(opt=opt, lin=lin, zt=zt, yt=yt):
            opt.zero_grad()
            loss = F.cross_entropy(lin(zt), yt)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            pl = lin(torch.tensor(z[fold], dtype=torch.float32)).argmax(1).numpy()
        hits_logistic += int((pl == y[fold]).sum())
    chance = 1.0 / N_CAM
    assert hits_centroid / len(y) < chance + 0.17
    assert hits_logistic / len(y) < chance + 0.17


class _PatchNet(nn.Module):
    """A small CNN on high-passed patches (the CPU recipe of Bondi et al., shrunk)."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(32, 48, 3, stride=2, padding=1)
        self.c4 = nn.Conv2d(48, 64, 3, stride=2, padding=1)
        self.fc = nn.Linear(64, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)) * 10.0
        for conv in (self.c1, self.c2, self.c3, self.c4):
            x = F.relu(conv(x))
        return self.fc(x.mean(dim=(2, 3)))


def _patches(px: np.ndarray, p: int) -> np.ndarray:
    h, w, _ = px.shape
    return np.stack(
        [px[y : y + p, x : x + p] for y in range(0, h - p + 1, p) for x in range(0, w - p + 1, p)]
    )


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0


def test_small_cnn_learns_camera_models_from_32px_patches(two_threads):
    shots = _natural_shots(18, (128, 160), seed=11)
    train = [(p, ci) for p, ci, k in shots if k < 14]
    test = [(p, ci) for p, ci, k in shots if k >= 14]
    xtr = _tensor(np.concatenate([_patches(p, 32) for p, _ in train]))
    ytr = torch.tensor(np.concatenate([[ci] * 20 for _, ci in train]))
    net = _PatchNet(N_CAM)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(5):
        perm = torch.randperm(len(ytr))
        for i in range(0, len(perm), 64):
            b = perm[i : i + 64]
            loss = F.cross_entropy(net(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    patch_hits = patch_n = image_hits = 0
    with torch.no_grad():
        for px, ci in test:
            logits = net(_tensor(_patches(px, 32)))
            patch_hits += int((logits.argmax(1) == ci).sum())
            patch_n += len(logits)
            image_hits += int(logits.log_softmax(1).sum(0).argmax() == ci)
    chance = 1.0 / N_CAM
    assert patch_hits / patch_n > chance + 0.15, patch_hits / patch_n  # 400 test patches
    print(f"patch acc {patch_hits / patch_n:.3f}, image acc {image_hits / len(test):.2f}")
    assert image_hits / len(test) > chance + 0.1, image_hits / len(test)


@pytest.mark.slow
def test_printer_difference_is_learnable_at_full_resolution(two_threads):
    size, n_train, n_test = 384, 288, 100
    imgs, labels = [], []
    for k in range(n_train + n_test):
        cam = SPEC.cameras[k % N_CAM]  # cameras balanced over both labels
        lab = (k // N_CAM) % 2
        rng = np.random.default_rng([23, k])
        scene, _ = bottle_scene((size, size), rng, PRINTERS[lab])
        px, _ = simulate(scene, cam, (k // 10) % cam.devices, rng)
        imgs.append(px)
        labels.append(lab)
    x = _tensor(np.stack(imgs))
    y = torch.tensor(labels)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 2),
    )
    epochs, crop = 30, 128
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = np.random.default_rng(0)
    for _ in range(epochs):
        perm = torch.randperm(n_train)
        for i in range(0, n_train, 16):
            b = perm[i : i + 16]
            oy, ox = gen.integers(size // 2 - crop // 2 - 50, size // 2 - crop // 2 + 50, 2)
            xb = x[b][:, :, oy : oy + crop, ox : ox + crop]
            if gen.random() < 0.5:
                xb = xb.flip(3)  # mirror: keeps dot aspect and spacing (no 90-degree turns)
            xb = xb - xb.mean(dim=(2, 3), keepdim=True)
            loss = F.cross_entropy(net(xb), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        xt = x[n_train:]
        pred = net(xt - xt.mean(dim=(2, 3), keepdim=True)).argmax(1)  # whole images
    acc = float((pred == y[n_train:]).float().mean())
    print(f"printer accuracy on {n_test} whole test images: {acc:.2f}")
    assert acc > 0.62, acc  # chance 0.5; p < 0.01 for 100 coin flips
