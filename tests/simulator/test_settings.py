"""config/sim.toml holds exactly the SimSettings defaults; every option's help names its unit or choices."""

from __future__ import annotations

from temscript.base_microscope import BaseMicroscope

from tiltstream.config import CONFIG_DIR, read_toml
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.settings import SimSettings


def test_toml_equals_model_defaults():
    defaults = {key: value for key, value in SimSettings().model_dump().items() if value is not None}  # unset: no line
    assert read_toml(CONFIG_DIR / "sim.toml") == defaults


def test_every_field_is_described():
    for name, field in SimSettings.model_fields.items():
        assert field.description and len(field.description) > 10, name


def test_simulated_microscope_is_a_temscript_backend():
    assert issubclass(SimulatedMicroscope, BaseMicroscope)
