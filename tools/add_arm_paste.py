#!/usr/bin/env python3
"""Copy a checkpoint whose light decoder reads the arm drawing and set its arm paste: wherever a
link is drawn that frame 0 shows, the decoded image moves ``--weight`` of the way toward that
link's median colour in frame 0 (``vae.fast_decoder_arm_paste``, ``CausalGenerator.paste_arm``),
with the links drawn as ``--chain`` (``vae.fast_decoder_arm_paste_chain``, a chain of
``aapt_ros.model.arm.ARM_CHAINS`` that moves like the generator's).

No weight changes: the paste is a rule applied after the decoder, so a decoder trained without it
streams with it (the shipped v23 is v21's weights with it; docs/training, "Each link's colour
pasted"). A decoder stage started from the copy trains with the paste in place. The weights are
written in bfloat16 as shipped (``--float32`` to keep a training checkpoint's), so a shipped
model's copy streams everything else bit for bit as before.

Usage::

    python3 tools/add_arm_paste.py models/default runs/sim/v23 --chain kuka_iiwa_meshes --weight 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

import torch

from aapt_ros.model.checkpoint import CARD_FILE, Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from aapt_ros.model.config import ConfigError
from aapt_ros.model.generator import CausalGenerator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', type=Path, help='checkpoint folder whose light decoder reads the arm drawing')
    parser.add_argument('output', type=Path, help='new checkpoint folder (refused if it exists and is not empty)')
    parser.add_argument('--weight', type=float, default=0.5, help='how far toward the link colour, 0..1 (0: none)')
    parser.add_argument('--chain', default='', help="the chain drawn for the paste (default: the generator's)")
    parser.add_argument('--float32', action='store_true', help='write float32 weights (default: bfloat16, as shipped)')
    args = parser.parse_args(argv)
    try:
        checkpoint = load_checkpoint(args.model)
        vae = dataclasses.replace(
            checkpoint.config.vae, fast_decoder_arm_paste=args.weight, fast_decoder_arm_paste_chain=args.chain
        )
        config = dataclasses.replace(checkpoint.config, vae=vae)
        generator = CausalGenerator(config)  # the paste's drawing is built from the config, not stored
    except (CheckpointError, ConfigError) as err:
        print(f'add_arm_paste: {err}', file=sys.stderr)
        return 2
    generator.load_state_dict(checkpoint.generator.state_dict())
    dtype = torch.float32 if args.float32 else torch.bfloat16
    try:
        save_checkpoint(
            Checkpoint(config, checkpoint.vae, generator, checkpoint.start_frame), args.output, weight_dtype=dtype
        )
    except CheckpointError as err:
        print(f'add_arm_paste: {err}', file=sys.stderr)
        return 2
    if (args.model / CARD_FILE).is_file():
        shutil.copy(args.model / CARD_FILE, args.output / CARD_FILE)
    with (args.output / CARD_FILE).open('a') as card:
        chain = args.chain or config.generator.arm_chain
        card.write(
            f'\n- arm paste (tools/add_arm_paste.py, no training): {args.weight:g} of the way toward each '
            f"link's colour in frame 0, links drawn as {chain}\n"
        )
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    sys.exit(main())
