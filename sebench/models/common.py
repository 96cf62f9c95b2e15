"""What the zoo's networks share: stage assembly with SE placement and paper-style SE names."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from torch import nn

from sebench.layers.se import SEConfig


def build_stage(stage_id: int, make_block: Callable[[int, Optional[SEConfig]], nn.Module],
                num_blocks: int, se: Optional[SEConfig]) -> nn.Sequential:
    """`make_block(index, se)` builds block `index` (0-based); SE modules get the tag
    ``SE_<stage>_<block>`` (block counted from 1), the names the paper's excitation study uses."""
    blocks = []
    for i in range(num_blocks):
        block = make_block(i, se)
        if getattr(block, "se", None) is not None:
            block.se.tag = f"SE_{stage_id}_{i + 1}"
        blocks.append(block)
    return nn.Sequential(*blocks)


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
