"""Excitation recording (the paper's "Role of Excitation" study): hooks, streaming statistics, class
specificity, saturation, figures and CSVs."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from sebench.analysis.excitation import (
    ALL, TIDY_COLUMNS, SUMMARY_COLUMNS, BlockStats, ExcitationRecorder, ExcitationStats,
    default_show_classes, paper_blocks, record, resolve_blocks)
from sebench.analysis.run import analyze
from sebench.errors import UserError
from sebench.layers.se import SqueezeExcite, se_modules
from sebench.models import build_model

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest, and far faster on a busy machine (no spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batches(sizes, num_classes=4, seed=0, hw=8):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        y = torch.randint(0, num_classes, (n,), generator=g)
        # per-image brightness/contrast so that the gates vary within a class, plus a class shift
        x = (torch.randn(n, 3, hw, hw, generator=g) * (0.5 + torch.rand(n, 1, 1, 1, generator=g))
             + torch.randn(n, 1, 1, 1, generator=g) + 0.3 * y[:, None, None, None])
        out.append((x, y))
    return out


def _manual_gates(model, batches):
    """Gate values [N, C] per SE module, computed by calling `excite` on inputs captured by pre-hooks."""
    mods = se_modules(model)
    inputs = {t: [] for t in mods}
    handles = [m.register_forward_pre_hook(lambda mod, args, t=t: inputs[t].append(args[0].clone()))
               for t, m in mods.items()]
    model.eval()
    with torch.no_grad():
        for x, _ in batches:
            model(x)
        for h in handles:
            h.remove()
        gates = {}
        for t, m in mods.items():
            g = torch.cat([m.excite(inp) for inp in inputs[t]])
            gates[t] = (g.mean((2, 3)) if g.dim() == 4 else g).double()
    return gates


def _tiny_se_model(channels=6, gate="relu"):
    """A 'model' that is one SE module whose excitation MLP is the identity: gate = act(mean_hw(x))."""
    se = SqueezeExcite(channels, gate=gate)
    se.mlp = nn.Identity()
    se.tag = "SE_1_1"
    return nn.Sequential(se)


@pytest.mark.parametrize("se", ["se", {"squeeze": "none"}], ids=["avg", "nosqueeze"])
def test_recorded_means_equal_manual_excite(se):
    torch.manual_seed(0)
    model = build_model("resnet20", se=se)
    batches = _batches([6, 9, 5])
    stats = record(model, batches, blocks="all", classes=["a", "b", "c", "d"])
    gates = _manual_gates(model, batches)
    y = torch.cat([b[1] for b in batches])
    assert stats.blocks == list(se_modules(model))
    for tag, g in gates.items():
        for k, name in enumerate(stats.classes):
            want = g[y == k].mean(0).numpy()
            np.testing.assert_allclose(stats.per_class_mean(tag, name), want, atol=1e-6, rtol=0)
        np.testing.assert_allclose(stats.overall_mean(tag), g.mean(0).numpy(), atol=1e-6, rtol=0)


def test_streaming_stats_equal_two_pass():
    model = _tiny_se_model(channels=5, gate="sigmoid")
    g = torch.Generator().manual_seed(1)
    sizes = [7, 1, 13, 2, 5]  # uneven, and some batches lack some classes
    batches = [(torch.randn(n, 5, 3, 3, generator=g) * 2, torch.randint(0, 3, (n,), generator=g))
               for n in sizes]
    stats = record(model, batches, blocks=["SE_1_1"], classes=["x", "y", "z"])
    allx = torch.cat([b[0] for b in batches]).double()
    ally = torch.cat([b[1] for b in batches])
    gates = torch.sigmoid(allx.mean((2, 3)))
    for k, name in enumerate(["x", "y", "z"]):
        sel = gates[ally == k]
        np.testing.assert_allclose(stats.per_class_mean("SE_1_1", name), sel.mean(0).numpy(), atol=1e-7)
        np.testing.assert_allclose(stats.per_class_std("SE_1_1", name), sel.std(0, unbiased=False).numpy(),
                                   atol=1e-7)
        assert stats.counts()[name] == int((ally == k).sum())
    np.testing.assert_allclose(stats.overall_std("SE_1_1"), gates.std(0, unbiased=False).numpy(), atol=1e-7)


def test_streaming_update_is_stable_with_large_offsets():
    rng = np.random.default_rng(0)
    values = 1e6 + rng.normal(size=(500, 4))
    labels = rng.integers(0, 2, 500)
    b = BlockStats.empty("SE_1_1", 0, 4, 2, ())
    for chunk in np.array_split(np.arange(500), 37):
        b.update(torch.from_numpy(values[chunk]), torch.from_numpy(labels[chunk]))
    for k in range(2):
        np.testing.assert_allclose(b.m2[k] / b.count[k], values[labels == k].var(0), rtol=1e-8)


def test_specificity_zero_for_identical_classes():
    torch.manual_seed(0)
    model = build_model("resnet20", se="se")
    x = _batches([10])[0][0]
    batches = [(x, torch.zeros(10, dtype=torch.long)), (x, torch.ones(10, dtype=torch.long))]
    stats = record(model, batches, blocks="all", classes=["same", "twin"])
    for tag in stats.blocks:
        assert abs(stats.class_specificity(tag)) < 1e-9
        np.testing.assert_allclose(stats.per_class_mean(tag, "same"), stats.per_class_mean(tag, "twin"))


def test_specificity_grows_with_class_separation():
    model = _tiny_se_model(channels=4, gate="relu")
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(60, 4, 2, 2, generator=g)
    y = torch.arange(60) % 3
    values, adjusted = [], []
    for delta in [0.0, 0.1, 0.3, 1.0, 3.0]:
        x = 10 + noise + delta * y[:, None, None, None]  # positive, so the relu gate is linear
        stats = record(model, [(x[:25], y[:25]), (x[25:], y[25:])], blocks=["SE_1_1"])
        values.append(stats.class_specificity("SE_1_1"))
        adjusted.append(stats.class_specificity("SE_1_1", adjusted=True))
    assert values[0] < 0.1
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert all(a < b for a, b in zip(adjusted, adjusted[1:])), adjusted
    assert values[-1] > 0.9 and values[-1] <= 1.0
    assert stats.chance_specificity("SE_1_1") == pytest.approx(2 / 59)
    assert abs(adjusted[0]) < abs(values[0]) and adjusted[-1] > 0.9


def test_saturation_share_on_crafted_gates():
    model = _tiny_se_model(channels=2, gate="relu")
    # gate = mean over H, W: constant maps give these exact values per (image, channel)
    vals = torch.tensor([[0.99, 0.20], [0.96, 0.95], [0.10, 0.97], [0.50, 0.40]])
    x = vals[:, :, None, None].expand(4, 2, 3, 3).contiguous()
    y = torch.tensor([0, 0, 1, 1])
    stats = record(model, [(x, y)], blocks=["SE_1_1"], classes=["p", "q"], thresholds=(0.95, 0.5))
    assert stats.saturation_share("SE_1_1") == pytest.approx(3 / 8)  # 0.95 itself is not above
    assert stats.saturation_share("SE_1_1", cls="p") == pytest.approx(2 / 4)
    assert stats.saturation_share("SE_1_1", cls="q") == pytest.approx(1 / 4)
    assert stats.saturation_share("SE_1_1", 0.5) == pytest.approx(4 / 8)
    with pytest.raises(UserError, match="0.9"):
        stats.saturation_share("SE_1_1", 0.9)


def test_hooks_removed_and_outputs_unchanged():
    torch.manual_seed(0)
    model = build_model("resnet20", se="se").eval()
    x, y = _batches([5])[0]
    with torch.no_grad():
        before = model(x)
        with ExcitationRecorder(model, blocks="all") as rec:
            assert all(len(m.gate._forward_hooks) == 1 for m in se_modules(model).values())
            rec.set_labels(y)
            during = model(x)
        after = model(x)
    assert torch.equal(before, during) and torch.equal(before, after)
    assert all(not m.gate._forward_hooks for m in se_modules(model).values())
    assert rec.stats().counts() == {str(k): int((y == k).sum()) for k in range(int(y.max()) + 1)}

    with pytest.raises(ZeroDivisionError):
        with ExcitationRecorder(model, blocks=["SE_2_1"]):
            1 / 0
    assert all(not m.gate._forward_hooks for m in se_modules(model).values())

    model.train()
    record(model, [(x, y)], blocks=["SE_1_1"])
    assert model.training and all(m.training for m in model.modules())  # mode restored


def test_labels_required_for_every_forward():
    model = _tiny_se_model()
    x = torch.rand(3, 6, 2, 2)
    with torch.no_grad(), ExcitationRecorder(model, blocks="all") as rec:
        with pytest.raises(RuntimeError, match="set_labels"):
            model(x)
        rec.set_labels(torch.tensor([0, 1, 1]))
        model(x)
        with pytest.raises(RuntimeError, match="set_labels"):
            model(x)  # stale labels
        rec.set_labels(torch.tensor([0, 1]))
        with pytest.raises(RuntimeError, match="2 labels"):
            model(x)


def test_unknown_block_lists_available_tags():
    model = build_model("resnet20", se="se")
    with pytest.raises(UserError) as err:
        ExcitationRecorder(model, blocks=["SE_3_1", "SE_9_9"])
    msg = str(err.value)
    assert "SE_9_9" in msg and "SE_1_1" in msg and "SE_3_3" in msg
    with pytest.raises(UserError, match="no SE modules"):
        resolve_blocks(build_model("resnet20"), None)


def test_block_selection():
    r50 = [f"SE_{s}_{b}" for s, n in zip((2, 3, 4, 5), (3, 4, 6, 3)) for b in range(1, n + 1)]
    assert paper_blocks(r50) == ["SE_2_3", "SE_3_4", "SE_4_6", "SE_5_1", "SE_5_2", "SE_5_3"]
    r20 = [f"SE_{s}_{b}" for s in (1, 2, 3) for b in (1, 2, 3)]
    assert paper_blocks(r20) == ["SE_1_3", "SE_2_3", "SE_3_1", "SE_3_2", "SE_3_3"]
    assert resolve_blocks(r20, ["SE_3_1", "SE_1_2"]) == ["SE_1_2", "SE_3_1"]  # depth order
    assert len(paper_blocks([f"layer{i}.se" for i in range(20)])) == 6      # untagged: evenly spaced
    assert default_show_classes(CIFAR) == ["frog", "airplane", "dog", "truck"]
    assert default_show_classes([f"c{i}" for i in range(7)]) == ["c0", "c2", "c4", "c6"]


def test_analyze_writes_csvs_and_figures(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", se="se")
    batches = _batches([12, 8], num_classes=10)
    label = "random data | resnet20 SE (untrained) | run test | quick"
    paths = analyze(model, batches, CIFAR, tmp_path, label=label, channels=20)
    assert set(paths) == {"stats_csv", "summary_csv", "class_means_png", "within_class_png",
                          "specificity_png", "saturation_png"}
    for key, p in paths.items():
        assert p.exists() and p.parent == tmp_path
        if key.endswith("png"):
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20_000, key
    tidy = pd.read_csv(paths["stats_csv"])
    assert list(tidy.columns[:len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    assert ALL in set(tidy["class"])
    assert set(tidy["block"]) == set(se_modules(model))
    summary = pd.read_csv(paths["summary_csv"])
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary["block"]) == list(se_modules(model))
    assert summary["specificity"].between(0, 1).all()

    # the CSV round-trips into the same statistics
    again = ExcitationStats.read_csv(paths["stats_csv"], classes=CIFAR)
    first = record(model, batches, blocks="all", classes=CIFAR)
    for tag in first.blocks:
        assert again.class_specificity(tag) == pytest.approx(first.class_specificity(tag), abs=1e-9)
        assert again.saturation_share(tag) == pytest.approx(first.saturation_share(tag))
        np.testing.assert_allclose(again.overall_mean(tag), first.overall_mean(tag), atol=1e-12)

    with pytest.raises(UserError, match="unknown class"):
        analyze(model, batches, CIFAR, tmp_path / "x", stats=first, show_classes=["goldfish"])
