"""Every shipped recipe parses into its study's config (no unknown keys, valid values)."""
from pathlib import Path

import pytest

from adaptlab.config import from_dict, load_yaml
from adaptlab.studies import STUDIES

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


def test_recipes_are_shipped():
    assert {p.name for p in RECIPES} >= {"tone.yaml", "tone-full.yaml", "quickstart.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path):
    data = load_yaml(path)
    study = data.pop("study")
    cfg = from_dict(STUDIES[study]().Config, data)
    assert cfg.name
