from __future__ import annotations

import pytest

from aapt_ros.model.config import ConfigError, GeneratorConfig, ModelConfig, VAEConfig, from_dict, to_dict


def test_config_round_trips_through_a_plain_dict() -> None:
    config = ModelConfig(generator=GeneratorConfig(dim=64, heads=2, action_names=('a', 'b')))
    assert from_dict(ModelConfig, to_dict(config)) == config


def test_unknown_key_is_an_error_that_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"model.yaml.generator: unknown key\(s\) \['dimm'\].*valid keys"):
        from_dict(ModelConfig, {'generator': {'dimm': 3}}, where='model.yaml')


def test_wrong_type_is_an_error_that_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r'cfg.generator.depth: expected int, got str'):
        from_dict(ModelConfig, {'generator': {'depth': 'six'}}, where='cfg')


def test_boolean_is_not_accepted_as_an_integer() -> None:
    with pytest.raises(ConfigError, match=r'expected int, got bool'):
        from_dict(ModelConfig, {'generator': {'depth': True}})


def test_integer_is_accepted_where_a_float_is_expected() -> None:
    assert from_dict(ModelConfig, {'camera': {'fx': 100}}).camera.fx == 100.0


def test_image_size_must_be_divisible_by_the_patch_grid() -> None:
    with pytest.raises(ConfigError, match=r'must be divisible by vae\.spatial_factor'):
        from_dict(ModelConfig, {'camera': {'width': 100, 'height': 64}})


@pytest.mark.parametrize(
    ('section', 'values', 'message'),
    [
        ('vae', {'spatial_factor': 6}, 'spatial_factor must be 4, 8 or 16'),
        ('vae', {'temporal_factor': 2}, 'temporal_factor must be 1 or 4'),
        ('generator', {'dim': 30, 'heads': 4}, 'must be divisible by generator.heads'),
        ('generator', {'window_frames': 1}, 'window_frames must be >= 2'),
        ('generator', {'action_names': ['a', 'a']}, 'duplicates'),
        ('camera', {'rate_hz': 0}, 'rate_hz must be positive'),
    ],
)
def test_invalid_values_are_rejected_with_the_reason(section: str, values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, {section: values})


def test_default_config_has_a_window_of_at_least_two_seconds() -> None:
    config = ModelConfig()
    assert config.generator.window_frames / config.camera.rate_hz >= 2.0
    assert VAEConfig().num_downsamples == 3
