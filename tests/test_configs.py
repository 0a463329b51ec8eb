"""One config style: every config class in qhybrid is a frozen, validated ``Config`` dataclass that
round-trips through JSON, names unknown fields, and changes only by ``replace`` (validated again)."""

import dataclasses
import importlib
import json
import pkgutil

import pytest

import qhybrid
from qhybrid.config import Config


def config_classes():
    """Every class named ``*Config``, plus CircuitSpec and RuntimeOptions, defined in qhybrid."""
    found = {}
    for info in pkgutil.walk_packages(qhybrid.__path__, "qhybrid."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if isinstance(obj, type) and obj.__module__ == module.__name__ and (
                    name.endswith("Config") and name != "Config" or name in ("CircuitSpec", "RuntimeOptions")):
                found[f"{module.__name__}.{name}"] = obj
    return found


CONFIGS = config_classes()


def test_the_survey_finds_the_configs_of_every_layer():
    names = {name.rsplit(".", 1)[1] for name in CONFIGS}
    assert {"CircuitSpec", "VAEConfig", "DenoiserConfig", "SchedulerConfig", "DemoConfig", "RuntimeOptions",
            "ValidatorConfig", "EncoderConfig", "StudyConfig", "VAETrainConfig", "DiffusionTrainConfig"} <= names


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_frozen_validated_and_json_round_trip(name):
    cls = CONFIGS[name]
    assert issubclass(cls, Config) and dataclasses.is_dataclass(cls), f"{name} is not a Config dataclass"
    assert cls.__dataclass_params__.frozen, f"{name} is not frozen"
    cfg = cls()
    again = cls.from_json(json.dumps(cfg.to_dict()))
    assert again == cfg
    field = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, field, getattr(cfg, field))
    with pytest.raises(ValueError, match="unknown field"):
        cls.from_dict({**cfg.to_dict(), "no_such_field": 1})


def test_replace_validates_again():
    from qhybrid.models.vae import VAEConfig

    cfg = VAEConfig(size=32)
    assert cfg.latent_size == 8 and cfg.replace(latent_scale=0.5).latent_scale == 0.5
    with pytest.raises(ValueError, match="image size"):
        cfg.replace(size=48)
