from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from aapt_ros.data.sim_scene import TABLE_BOXES
from aapt_ros.model.checkpoint import (
    CONFIG_FILE,
    EXTRAS_FILE,
    GENERATOR_FILE,
    VAE_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from aapt_ros.model.config import VAEConfig
from aapt_ros.model.init_checkpoint import main as init_main


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / 'model'))


def test_saved_checkpoint_loads_with_identical_weights(tiny_model: Path) -> None:
    checkpoint = load_checkpoint(tiny_model)
    reloaded = load_checkpoint(save_checkpoint(checkpoint, tiny_model.parent / 'copy', weight_dtype=torch.float32))
    for a, b in zip(checkpoint.generator.state_dict().values(), reloaded.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(checkpoint.start_frame, reloaded.start_frame)
    assert reloaded.config == checkpoint.config


def test_save_refuses_to_overwrite_a_checkpoint(tiny_model: Path) -> None:
    with pytest.raises(CheckpointError, match='refusing to overwrite'):
        save_checkpoint(load_checkpoint(tiny_model), tiny_model)


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f'model folder not found: {tmp_path / "nope"}'):
        load_checkpoint(tmp_path / 'nope')


@pytest.mark.parametrize('name', [CONFIG_FILE, VAE_FILE, GENERATOR_FILE, EXTRAS_FILE])
def test_missing_file_is_named(model_copy: Path, name: str) -> None:
    (model_copy / name).unlink()
    with pytest.raises(CheckpointError, match=f'not found: {model_copy / name}'):
        load_checkpoint(model_copy)


@pytest.mark.parametrize('name', [VAE_FILE, GENERATOR_FILE, EXTRAS_FILE])
def test_corrupt_weights_file_is_named(model_copy: Path, name: str) -> None:
    (model_copy / name).write_bytes(b'\x00garbage' * 10)
    with pytest.raises(CheckpointError, match=f'{model_copy / name} is not a readable safetensors file'):
        load_checkpoint(model_copy)


def test_weights_that_do_not_match_the_config_are_named(model_copy: Path) -> None:
    config = (model_copy / CONFIG_FILE).read_text().replace('dim: 32', 'dim: 64')
    (model_copy / CONFIG_FILE).write_text(config)
    with pytest.raises(CheckpointError, match=f'{model_copy / GENERATOR_FILE}: tensor .* has shape'):
        load_checkpoint(model_copy)


def test_invalid_config_is_reported_with_its_path(model_copy: Path) -> None:
    (model_copy / CONFIG_FILE).write_text('generator:\n  depht: 2\n')
    with pytest.raises(CheckpointError, match=rf'invalid model config: {model_copy / CONFIG_FILE}.generator: unknown'):
        load_checkpoint(model_copy)


def test_unparseable_config_is_reported_with_its_path(model_copy: Path) -> None:
    (model_copy / CONFIG_FILE).write_text('generator: [unclosed\n')
    with pytest.raises(CheckpointError, match=f'could not read model config {model_copy / CONFIG_FILE}'):
        load_checkpoint(model_copy)


def test_init_tool_writes_a_loadable_untrained_checkpoint_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init_main([str(tmp_path / 'm')]) == 0
    assert load_checkpoint(tmp_path / 'm').config.stage == 'untrained'
    assert init_main([str(tmp_path / 'm')]) == 1
    assert 'refusing to overwrite' in capsys.readouterr().err


def test_shipped_models_load_and_fit_the_size_budget() -> None:
    """models/default: each file <= 16 MiB, all <= 48 MiB."""
    models = Path(__file__).resolve().parents[2] / 'models'
    assert sorted(p.name for p in models.iterdir()) == ['default']
    sizes = [f.stat().st_size for f in models.glob('*/*')]
    assert max(sizes) <= 16 * 2**20 and sum(sizes) <= 48 * 2**20
    for folder in models.iterdir():
        checkpoint = load_checkpoint(folder)
        assert (folder / 'MODEL_CARD.md').is_file()
        assert checkpoint.config.camera.width == 128
    default = load_checkpoint(models / 'default').config
    assert default.generator.sink_warp_pixels and default.vae.fast_encoder_channels  # v14: light-encoded warps
    assert default.vae.fast_decoder_warp_planes == 2  # v15: the light decoder copies the table and ground warps
    assert default.vae.fast_decoder_arm_warp  # v16: ... and the arm as the first image shows it
    assert default.vae.fast_decoder_ground_tile == 2.0  # v17: ... and the floor folded from it into one 2 m period
    assert default.vae.fast_decoder_ground_tile_depth == 10.0  # v18: ... up to the recordings' far plane
    # v19: ... each copy only where it shows what the camera sees, told our recorder's table
    assert default.vae.fast_decoder_static_boxes == TABLE_BOXES
    assert default.vae.fast_decoder_paste_unseen  # v21: ... and what frame 0 never showed pasted from the copies
    # v23: ... and each drawn link moved toward its colour in frame 0, the links drawn as spheres fitted to their
    # meshes (0.7: v30, 0.8: v33)
    assert (default.vae.fast_decoder_arm_paste, default.vae.fast_decoder_arm_paste_chain) == (0.8, 'kuka_iiwa_meshes')
    # v26: ... drawn at the previous action; the tile from the nearest copies; the unseen paste over frame 0's arm
    assert default.vae.fast_decoder_arm_paste_previous_action and default.vae.fast_decoder_paste_under_arm
    assert default.vae.fast_decoder_ground_tile_nearest == 3
    # v27: ... and each box face and the background in frame 0's colours
    assert default.vae.fast_decoder_paste_box_faces and default.vae.fast_decoder_paste_sky
    # v28: ... the paste's silhouette twice as fine; v33: drawn from points on the meshes instead
    assert sum(default.vae.fast_decoder_arm_paste_surface) == 131072
    # v30: ... the tile snapped to the floor's colours, the image smoothed, its chroma as the recordings keep it
    assert default.vae.fast_decoder_ground_tile_snap and default.vae.fast_decoder_bilateral == 20.0
    assert default.camera.chroma_subsampled
    assert default.vae.fast_decoder_paste_objects  # v32: ... and frame 0's objects stood above the table top
    assert load_checkpoint(models / 'default').generator.arm_surface is not None  # v33: its points in the extras
    assert default.vae.fast_decoder_arm_paste_shading  # v34: ... and the paste lit by a light fitted on frame 0
    # Stages that start from it see the autoencoder alone (the adversarial stage compares it so).
    plain = default.vae.without_light_decoder()
    for field in dataclasses.fields(plain):
        light = field.name.startswith('fast_decoder_')
        assert getattr(plain, field.name) == getattr(VAEConfig() if light else default.vae, field.name), field.name


def test_an_incomplete_set_of_shards_is_named(model_copy: Path) -> None:
    checkpoint = load_checkpoint(model_copy)
    save_checkpoint(checkpoint, model_copy, overwrite=True, max_file_bytes=20_000)
    assert not (model_copy / GENERATOR_FILE).exists()
    shards = sorted(model_copy.glob('generator-*'))
    shards[1].unlink()
    with pytest.raises(CheckpointError, match='sharded, but its shards are not one complete set'):
        load_checkpoint(model_copy)
    save_checkpoint(checkpoint, model_copy, overwrite=True)  # one file again: the stale shards go
    assert sorted(p.name for p in model_copy.glob('generator*')) == [GENERATOR_FILE]
    load_checkpoint(model_copy)
