"""What the zoo's networks share: stage assembly with SE placement and paper-style SE names."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from torch import nn

from sebench.layers.se import SEConfig


def build_stages(stage_ids: Sequence[int], plan: Sequence[tuple[int, int, int]], in_ch: int,
                 make_block: Callable[[int, int, int, int, int, Optional[SEConfig]], nn.Module],
                 se: Optional[SEConfig], se_stages: Optional[Sequence[int]]) -> tuple[nn.Sequential, int]:
    """A network's stages as one nn.Sequential of per-stage nn.Sequentials, and the channels out of the last.

    `plan` gives each stage (out channels, blocks, stride). `make_block(stage_id, index, in_ch, out_ch,
    stride, se)` builds one block: a stage's first block (index 0) takes the previous stage's channels and
    the stage's stride, the others out_ch and stride 1. SE goes to the stages in `se_stages` (None: all);
    SE modules get the tag ``SE_<stage>_<block>`` (block counted from 1), the names the paper's excitation
    study uses."""
    stages = []
    for sid, (out_ch, num_blocks, stride) in zip(stage_ids, plan):
        cfg, blocks = stage_se(se, sid, se_stages), []
        for i in range(num_blocks):
            block = make_block(sid, i, in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, cfg)
            if getattr(block, "se", None) is not None:
                block.se.tag = f"SE_{sid}_{i + 1}"
            blocks.append(block)
        stages.append(nn.Sequential(*blocks))
        in_ch = out_ch
    return nn.Sequential(*stages), in_ch


def stage_se(se: Optional[SEConfig], stage_id: int, se_stages: Optional[Sequence[int]]):
    """The SE config for one stage: None where SE is off or the stage is not selected."""
    if se is None or (se_stages is not None and stage_id not in se_stages):
        return None
    return se


def init_weights(model: nn.Module) -> None:
    """He (fan_out) init for convs, unit BN, as the ResNet papers and torchvision do."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
