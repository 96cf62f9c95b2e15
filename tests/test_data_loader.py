"""ArrayLoader and the batched augmentation ops, on tiny synthetic tensors."""

import pytest
import torch
import torch.nn.functional as F

from sebench.data import ArrayLoader
from sebench.data.augment import crop_flip, resize_center_crop, resized_crop_flip, rrc_params

RAW = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)  # normalization that returns the raw 0..255 values


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def loader(x, y=None, **kw) -> ArrayLoader:
    args = dict(batch_size=16, train=True, device="cpu", seed=0, augment="crop_flip", **RAW)
    args.update(kw)
    return ArrayLoader(x, torch.arange(len(x)) if y is None else y, **args)


def collect(ld: ArrayLoader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*ld)
    return torch.cat(xs), torch.cat(ys)


def as_pixels(out: torch.Tensor) -> torch.Tensor:
    return out.round().to(torch.uint8)


def test_shapes_dtypes_len_and_drop_last():
    x = images(50)
    ld = loader(x)
    batches = list(ld)
    assert len(ld) == len(batches) == 4
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    xb, yb = batches[0]
    assert xb.shape == (16, 3, 32, 32) and xb.dtype == torch.float32 and xb.is_contiguous()
    assert yb.dtype == torch.int64
    dropped = loader(x, drop_last=True)
    assert len(dropped) == len(list(dropped)) == 3
    assert sorted(collect(loader(x))[1].tolist()) == list(range(50))  # every image once per epoch


def test_normalization():
    x = images(20)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    out, _ = collect(loader(x, train=False, augment="none", mean=mean, std=std))
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def manual_crop(img: torch.Tensor, dy: int, dx: int, flip: bool, pad: int = 4) -> torch.Tensor:
    window = F.pad(img, (pad,) * 4)[:, dy:dy + img.shape[1], dx:dx + img.shape[2]]
    return window.flip(2) if flip else window


def test_crop_flip_op_matches_manual_crops():
    x = images(6)
    dy, dx = torch.tensor([0, 8, 3, 4, 1, 7]), torch.tensor([8, 0, 5, 4, 2, 7])
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(x, dy, dx, flip, pad=4)
    for i in range(6):
        assert torch.equal(out[i], manual_crop(x[i], int(dy[i]), int(dx[i]), bool(flip[i])))


def test_loader_crops_are_shifted_windows_of_the_padded_image():
    x = images(8)
    out, ids = collect(loader(x))  # labels are image ids, so each output's source is known
    for o, i in zip(as_pixels(out), ids):
        candidates = [manual_crop(x[i], dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)]
        assert any(torch.equal(o, c) for c in candidates)


def coordinate_images(n: int) -> torch.Tensor:
    """Channel 0 holds row+1, channel 1 column+1 (0 marks padding): a crop reveals its offsets."""
    ar = torch.arange(1, 33, dtype=torch.uint8)
    zero = torch.zeros(32, 32, dtype=torch.uint8)
    img = torch.stack([ar[:, None].expand(32, 32), ar[None, :].expand(32, 32), zero])
    return img.expand(n, 3, 32, 32).contiguous()


def test_flip_rate_and_offset_range():
    out = as_pixels(collect(loader(coordinate_images(2000), batch_size=500))[0]).long()
    flipped = out[:, 1, 16, 16] < out[:, 1, 16, 15]
    assert 0.45 < flipped.float().mean() < 0.55
    dy = out[:, 0, 16, 16] - 13  # row 16 of the crop is padded row 16+dy, i.e. image row 16+dy-4 (+1 coded)
    dx = torch.where(flipped, out[:, 1, 16, 16] - 12, out[:, 1, 16, 16] - 13)
    assert set(dy.tolist()) == set(range(9)) and set(dx.tolist()) == set(range(9))


def test_same_seed_and_epoch_give_identical_batches_and_leave_global_rng_alone():
    x = images(40)
    a, b = loader(x, seed=3), loader(x, seed=3)
    for e in range(3):  # a runs epochs 0..2; b "resumes" straight at epoch 2
        a.set_epoch(e)
        first = collect(a)
    b.set_epoch(2)
    state = torch.get_rng_state()
    resumed = collect(b)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first[0], resumed[0]) and torch.equal(first[1], resumed[1])
    assert torch.equal(collect(b)[0], resumed[0])  # re-iterating the same epoch repeats it


def test_different_epoch_or_seed_gives_different_batches():
    x = images(40)
    a = loader(x, seed=3)
    e0 = collect(a)
    a.set_epoch(1)
    e1 = collect(a)
    other = collect(loader(x, seed=4))
    assert not torch.equal(e0[1], e1[1]) and not torch.equal(e0[0], e1[0])
    assert not torch.equal(e0[1], other[1])


@pytest.mark.parametrize("augment", ["crop_flip", "rrc_flip", "none"])
def test_eval_is_deterministic_and_unshuffled(augment):
    x = images(37)
    ld = loader(x, train=False, augment=augment, batch_size=10)
    out, ids = collect(ld)
    ld.set_epoch(5)
    again, _ = collect(ld)
    assert torch.equal(ids, torch.arange(37)) and torch.equal(out, again)
    if augment != "rrc_flip":  # at native size, eval leaves the pixels alone
        assert torch.equal(as_pixels(out), x)


def test_rrc_and_resize_output_shapes():
    x = images(12)
    assert collect(loader(x, augment="rrc_flip", image_size=48))[0].shape == (12, 3, 48, 48)
    assert collect(loader(x, augment="rrc_flip", train=False, image_size=48))[0].shape == (12, 3, 48, 48)
    assert collect(loader(x, augment="crop_flip", image_size=20))[0].shape == (12, 3, 20, 20)
    assert collect(loader(x, augment="none", image_size=40, train=False))[0].shape == (12, 3, 40, 40)
    assert resize_center_crop(x.float(), 224).shape == (12, 3, 224, 224)


def test_rrc_params_follow_torchvision_ranges():
    boxes = rrc_params(5000, 32, 32, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / 32**2
    assert area.min() >= 0.05 and area.max() <= 1  # 0.08 before rounding the sides
    ratio = w / h
    assert ratio.min() > 0.5 and ratio.max() < 2


def test_resized_crop_of_an_unscaled_box_is_the_exact_window():
    x = images(3).float()
    boxes = torch.tensor([[0.0, 0, 32, 32], [4, 8, 16, 16], [10, 2, 16, 16]])
    no, yes = torch.zeros(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)
    torch.testing.assert_close(resized_crop_flip(x[:1], boxes[:1], no[:1], 32), x[:1])
    torch.testing.assert_close(resized_crop_flip(x[:1], boxes[:1], yes[:1], 32), x[:1].flip(3))
    out = resized_crop_flip(x[1:], boxes[1:], no[1:], 16)
    torch.testing.assert_close(out[0], x[1, :, 4:20, 8:24])
    torch.testing.assert_close(out[1], x[2, :, 10:26, 2:18])


def test_bad_arguments_are_programming_errors():
    with pytest.raises(ValueError):
        loader(images(4).float())
    with pytest.raises(ValueError):
        loader(images(4), augment="mixup")
