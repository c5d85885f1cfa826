"""The recipe schema's choice lists are the registries' names (formats, templates, projectors), so a
name the code knows is accepted at load and a misspelt one fails there, with the valid choices."""

from __future__ import annotations

import typing

import pytest

from mmtune.config.load import validate_recipe
from mmtune.config.schema import FORMAT_CHOICES, PROJECTOR_CHOICES, TEMPLATE_CHOICES
from mmtune.data.formats import FORMATS
from mmtune.data.templates import template_names
from mmtune.errors import ConfigError
from mmtune.models.projectors import PROJECTORS


def test_format_choices_are_the_registered_formats():
    assert set(typing.get_args(FORMAT_CHOICES)) == {"auto", *FORMATS}


def test_template_choices_are_the_registered_templates():
    assert set(typing.get_args(TEMPLATE_CHOICES)) == set(template_names())


def test_projector_choices_are_the_registered_projectors():
    assert set(typing.get_args(PROJECTOR_CHOICES)) == set(PROJECTORS)


@pytest.mark.parametrize("section,wrong", [
    ({"data": {"datasets": [{"path": "d.json", "format": "sharegpt4"}]}}, "data.datasets.0.format"),
    ({"data": {"datasets": [{"path": "d.json"}], "template": "chatml2"}}, "data.template"),
    ({"model": {"path": "m", "projector": {"type": "mlp3x"}}}, "model.projector.type"),
])
def test_a_name_outside_a_registry_fails_at_load(section, wrong):
    recipe = {"model": {"path": "m"}, "data": {"datasets": [{"path": "d.json"}]}}
    recipe.update({k: {**recipe.get(k, {}), **v} for k, v in section.items()})
    with pytest.raises(ConfigError, match=wrong.replace(".", r"\.")):
        validate_recipe(recipe)
