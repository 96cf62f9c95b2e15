"""Optimizers and lr schedules against hand-computed values."""

import math

import pytest
import torch
from torch import nn

from sebench.engine.optim import build_optimizer, build_scheduler, lr_factor
from sebench.spec import OptimCfg


def lrs_seen(cfg: OptimCfg, epochs: int, steps_per_epoch: int) -> list[float]:
    """The lr of every optimizer step when driven as fit drives it (scheduler.step() after each step)."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(nn.ParameterList([param]), cfg)
    scheduler = build_scheduler(optimizer, cfg, epochs, steps_per_epoch)
    seen = []
    for _ in range(epochs * steps_per_epoch):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_multistep_he_cifar_halves_and_three_quarters():
    cfg = OptimCfg(lr=0.1, schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    # 4 epochs x 3 steps: epochs 1-2 at 0.1, epoch 3 at 0.01, epoch 4 at 0.001.
    expected = [0.1] * 6 + [0.01] * 3 + [0.001] * 3
    assert lrs_seen(cfg, 4, 3) == pytest.approx(expected, rel=1e-12)


def test_multistep_fractional_milestone_rounds_up_to_next_epoch():
    cfg = OptimCfg(schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    f = lr_factor(cfg, epochs=10, steps_per_epoch=1)
    # 0.5 * 10 = epoch 5 exactly (0-based index 5 = the 6th epoch); 0.75 * 10 = 7.5 -> index 8.
    assert [f(e) for e in range(10)] == pytest.approx([1] * 5 + [0.1] * 3 + [0.01] * 2)
    # 0.1 * 30 is 3.0000000000000004 in floats; the decay must still start at epoch index 3.
    g = lr_factor(OptimCfg(schedule="multistep", milestones=(0.1,)), epochs=30, steps_per_epoch=1)
    assert (g(2), g(3)) == (1.0, pytest.approx(0.1))


def test_step_schedule_decays_each_epoch_for_004():
    cfg = OptimCfg(name="adadelta", lr=1.0, schedule="step", gamma=0.7, step_epochs=1, weight_decay=0)
    expected = [1.0, 1.0, 0.7, 0.7, 0.49, 0.49]
    assert lrs_seen(cfg, 3, 2) == pytest.approx(expected, rel=1e-12)
    every_two = lr_factor(OptimCfg(schedule="step", gamma=0.5, step_epochs=2), 6, 1)
    assert [every_two(e) for e in range(6)] == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def test_cosine_is_stepwise_to_zero():
    cfg = OptimCfg(lr=0.2, schedule="cosine")
    c = math.cos(math.pi / 4)
    expected = [0.2, 0.1 * (1 + c), 0.1, 0.1 * (1 - c)]
    assert lrs_seen(cfg, 2, 2) == pytest.approx(expected, rel=1e-12)


def test_linear_warmup_multiplies_any_schedule():
    constant = OptimCfg(lr=0.4, schedule="constant", warmup_epochs=0.5)
    assert lrs_seen(constant, 2, 4) == pytest.approx([0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])
    multistep = OptimCfg(lr=0.1, schedule="multistep", milestones=(0.5,), warmup_epochs=1)
    assert lrs_seen(multistep, 2, 4) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.01, 0.01, 0.01, 0.01])
    cosine = OptimCfg(lr=1.0, schedule="cosine", warmup_epochs=1)
    f = lr_factor(cosine, 2, 2)
    assert f(0) == pytest.approx(0.5 * 0.5 * (1 + 1.0))
    assert f(1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_weight_decay_excludes_bn_and_biases_when_asked():
    net = _net()
    opt = build_optimizer(net, OptimCfg(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                        wd_exclude_bn_bias=True))
    assert isinstance(opt, torch.optim.SGD)
    decay, no_decay = opt.param_groups
    conv, bn, linear = net[0], net[1], net[3]
    assert {id(p) for p in decay["params"]} == {id(conv.weight), id(linear.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(conv.bias), id(bn.weight), id(bn.bias), id(linear.bias)}
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (5e-4, 0.0)
    assert decay["nesterov"] and decay["momentum"] == 0.9


def test_weight_decay_on_everything_by_default_and_adadelta():
    net = _net()
    (group,) = build_optimizer(net, OptimCfg(weight_decay=1e-4)).param_groups
    assert len(group["params"]) == len(list(net.parameters())) and group["weight_decay"] == 1e-4
    opt = build_optimizer(net, OptimCfg(name="adadelta", lr=1.0, weight_decay=0))
    assert isinstance(opt, torch.optim.Adadelta) and opt.param_groups[0]["lr"] == 1.0
