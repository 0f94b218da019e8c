"""Train the models the streaming engine runs, one stage at a time, from rosbag2 recordings.

Usage::

    aapt-train vae --config config/train_tiny.yaml output=runs/vae
    aapt-train base --config config/train_tiny.yaml model=runs/vae output=runs/base
    aapt-train adapt --config config/train_tiny.yaml model=runs/base output=runs/adapt
    aapt-train distill --config config/train_tiny.yaml model=runs/adapt output=runs/distill
    aapt-train adversarial --config config/train_tiny.yaml model=runs/distill output=runs/adversarial \
        adversarial.discriminator_init=runs/adapt
    aapt-train decoder --config config/train_tiny.yaml model=runs/adversarial output=runs/decoder
    aapt-train encoder --config config/train_tiny.yaml model=runs/warps_in_pixels output=runs/encoder
    aapt-train adapt --config ... --resume          # continue an interrupted run exactly
    torchrun --nproc_per_node 4 -m aapt_ros.training.cli base --config ...   # 4 GPUs, DDP

Each stage writes to its output folder a checkpoint the runtime loads (config.yaml + safetensors),
MODEL_CARD_FRAGMENT.md, logs/ (TensorBoard when installed, else scalars.csv) and train_state/.
Overrides are dotted keys with YAML values, e.g. optim.steps=2000 optim.lr=1e-4 device=cuda.

The decoder stage is optional and takes any stage's checkpoint: it adds a light per-frame decoder
(vae.fast_decoder_channels) and changes nothing else of the model. The encoder stage is optional
too and takes a checkpoint whose generator warps the first image in pixels
(generator.sink_warp_pixels): it adds a light encoder for those warps (vae.fast_encoder_channels),
which they pass through from then on.

Under torchrun the vae, base, adapt, distill, decoder and encoder stages train data-parallel (DDP, one rank
per GPU, gloo ranks on the CPU): optim.batch_size is the global batch, split evenly over the ranks,
and rank 0 writes everything. The adversarial stage runs in one process only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist

from aapt_ros.data.bags import BagError
from aapt_ros.data.mapping import MappingError
from aapt_ros.model.config import ConfigError
from aapt_ros.training import adversarial_stage, decoder_stage, distill_stage, encoder_stage, flow_stage, vae_stage
from aapt_ros.training.checkpoints import check_output
from aapt_ros.training.config import STAGES, TrainConfig, TrainError, load_train_config
from aapt_ros.training.data import distributed, rank_share
from aapt_ros.training.loop import process_group, world_size

RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    'vae': vae_stage.run,
    'base': flow_stage.run,
    'adapt': flow_stage.run,
    'distill': distill_stage.run,
    'adversarial': adversarial_stage.run,
    'decoder': decoder_stage.run,
    'encoder': encoder_stage.run,
}
assert set(RUNNERS) == set(STAGES)
SINGLE_PROCESS_STAGES = ('adversarial',)  # its own loop (adversarial_stage), not data-parallel yet


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='aapt-train', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('stage', choices=STAGES, help='the training stage to run')
    parser.add_argument('--config', type=Path, required=True, help='training config YAML (see config/train_tiny.yaml)')
    parser.add_argument('overrides', nargs='*', metavar='key=value', help='config overrides, e.g. optim.steps=100')
    parser.add_argument('--resume', action='store_true', help="continue from the output folder's train_state/")
    parser.add_argument(
        '--stop-after',
        type=int,
        default=None,
        metavar='STEP',
        help='stop after this step, saving the state as if interrupted (for time-boxed runs and tests)',
    )
    return parser.parse_intermixed_args(argv)


def run(stage: str, config: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Run one stage after checking its output folder; returns the stage's summary values.

    Under torchrun (WORLD_SIZE > 1) every rank runs this: the stage trains data-parallel and rank 0
    writes the outputs while the others wait.
    """
    if world_size() > 1 and stage in SINGLE_PROCESS_STAGES:
        raise TrainError(f'the {stage} stage runs in one process: start it without torchrun')
    with process_group(config.device):
        rank_share(config.optim.batch_size)  # under DDP: the global batch must split evenly
        check_output(Path(config.output), resume)
        if distributed():
            dist.barrier()  # every rank has checked the folder before rank 0 writes to it
        return RUNNERS[stage](config, resume=resume, stop_after=stop_after)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_train_config(args.config, args.stage, args.overrides)
        summary = run(args.stage, config, resume=args.resume, stop_after=args.stop_after)
    except (ConfigError, TrainError, BagError, MappingError) as err:
        print(f'ERROR: {err}; see --help', file=sys.stderr)
        return 1
    if os.environ.get('RANK', '0') != '0':  # torchrun: rank 0 prints the summary
        return 0
    values = ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in summary.items())
    print(f'aapt-train {args.stage}: {config.output}: {values}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
