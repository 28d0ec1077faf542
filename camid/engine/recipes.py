"""Named training recipes: a documented set of TrainConfig values behind one word.

    camid train DATA --name X --recipe seed002-gpu

A recipe fills the fields it names; a value the caller set explicitly (anything other than
TrainConfig's default) wins over the recipe's, so `--recipe seed002-gpu --lr 3e-4` changes
only the learning rate. The model card records the recipe's name (`recipe.recipe`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from camid.engine.train import TrainConfig
from camid.errors import UsageError


@dataclass(frozen=True)
class Recipe:
    """A named set of TrainConfig values, with what it is for."""

    name: str
    fields: dict[str, Any]
    description: str


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "cpu-default",
            {},
            "camid's CPU default: tracenet on 64 px patches, seed-002 manipulations with "
            "p=0.5 (JPEG 70-90, gamma, resize x0.5/0.8/1.5/2.0)",
        ),
        Recipe(
            "cpu-robust",
            {"augment": "robust", "manipulate_p": 0.7},
            "tracenet whose pixel branch must carry re-saved and resized photos: with p=0.7 "
            "a chain of re-saves (JPEG 60-95, double compression), continuous resizes "
            "x0.5-1.6 followed by a re-save, or gamma; crops stay on the last JPEG grid",
        ),
        Recipe(
            "seed002-gpu",
            {
                "arch": "densenet161",
                "patch": 480,
                "large": 960,
                "patches_per_image": 1,
                "batch_size": 16,
                "lr": 1e-4,
                "pretrained": True,
                "augment": "seed002",
                "manipulate_p": 0.5,
                "d4": False,
                "epochs": 30,
                "patience": 6,
                "plateau_patience": 2,
            },
            "seed 002's winning recipe on a GPU: DenseNet-161 from ImageNet weights (local "
            "torchvision file densenet161-8d451a50.pth), random 960 crop -> manipulation "
            "with p=0.5 -> random 480 crop, Adam 1e-4 with reduce-on-plateau, best "
            "checkpoint kept; inference on 5 crops x D4 (TTA), soft vote",
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    """A recipe by name, or UsageError naming the choices."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UsageError(
            f"unknown recipe {name!r}; choose one of: {', '.join(sorted(RECIPES))}"
        ) from None


def apply_recipe(cfg: TrainConfig, name: str | None) -> TrainConfig:
    """`cfg` with the recipe's values wherever `cfg` still has TrainConfig's default."""
    if not name:
        return cfg
    recipe = get_recipe(name)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, Any] = {"recipe": name}
    for key, value in recipe.fields.items():
        if getattr(cfg, key) == defaults[key]:
            changes[key] = value
    return dataclasses.replace(cfg, **changes)
