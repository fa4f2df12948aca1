"""Tests of dlopt.data.datamodule: TensorBatches, input_stats and InMemoryDataModule, on real tensors."""

import lightning.pytorch as L
import pytest
import torch

from dlopt.data.datamodule import InMemoryDataModule, TensorBatches, input_stats
from dlopt.errors import UserError


def indexed(n, batch_size=4, **kw):
    """TensorBatches whose x and y both hold the sample's index, so a batch says which samples it has."""
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    return TensorBatches(x, torch.arange(n), batch_size, **kw)


def order(batches):
    """The sample indices in the order the batches yield them (checking x and y stay paired)."""
    seen = []
    for x, y in batches:
        assert torch.equal(x[:, 0].long(), y)
        seen += y.tolist()
    return seen


# TensorBatches


@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (7, 10), (1, 1)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_exactly_once_per_epoch(n, batch_size, shuffle):
    batches = indexed(n, batch_size, shuffle=shuffle, seed=3)
    for epoch in range(3):
        batches.set_epoch(epoch)
        assert sorted(order(batches)) == list(range(n))


def test_batches_have_batch_size_except_the_last():
    sizes = [len(y) for _, y in indexed(10, 4, shuffle=True)]
    assert sizes == [4, 4, 2]


def test_unshuffled_order_is_the_identity_in_every_epoch():
    batches = indexed(11, 4, shuffle=False, seed=5)
    assert order(batches) == list(range(11))
    batches.set_epoch(7)
    assert order(batches) == list(range(11))


def test_shuffled_order_depends_on_seed_and_epoch_only():
    a, b = indexed(50, 8, shuffle=True, seed=1), indexed(50, 8, shuffle=True, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    first = order(a)
    assert first == order(b)  # same seed and epoch: same order
    assert first == order(a)  # iterating again in the same epoch repeats it
    assert first != list(range(50))  # it is shuffled
    a.set_epoch(3)
    assert order(a) != first  # another epoch: another order
    c = indexed(50, 8, shuffle=True, seed=2)
    c.set_epoch(2)
    assert order(c) != first  # another seed: another order


def test_lightning_sets_the_epoch_of_the_training_batches():
    """A real fit reshuffles every epoch: the order in epoch e is the one set_epoch(e) gives."""

    class Record(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = {}

        def training_step(self, batch, batch_idx):
            self.seen.setdefault(self.current_epoch, []).extend(batch[1].tolist())
            return (self.w * batch[0].sum()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    x = torch.arange(20, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(20)
    dm = InMemoryDataModule(x, y, x[:4], y[:4], x[:4], y[:4], classes=["a"], batch_size=6, seed=9)
    module = Record()
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(module, datamodule=dm)
    assert sorted(module.seen) == [0, 1, 2]
    expected = indexed(20, 6, shuffle=True, seed=9)
    for epoch, seen in module.seen.items():
        expected.set_epoch(epoch)
        assert seen == order(expected)
    assert module.seen[0] != module.seen[1] != module.seen[2]


@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (8, 8), (3, 5)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_len_is_the_number_of_batches(n, batch_size, shuffle):
    batches = indexed(n, batch_size, shuffle=shuffle)
    assert len(batches) == sum(1 for _ in batches) == -(-n // batch_size)


@pytest.mark.parametrize("n", [10, 12, 9])
@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_take_equal_parts_that_cover_everything(n, shuffle):
    """As DistributedSampler: every rank gets as many samples, repeating n % world of them."""
    ranks = [indexed(n, 2, shuffle=shuffle, seed=4, rank=r, world=2) for r in range(2)]
    for epoch in (0, 1):
        parts = []
        for batches in ranks:
            batches.set_epoch(epoch)
            parts.append(order(batches))
        assert set(parts[0]) | set(parts[1]) == set(range(n))
        assert len(parts[0]) == len(parts[1]) == -(-n // 2)
        assert len(set(parts[0]) & set(parts[1])) == -n % 2


@pytest.mark.parametrize("n, world", [(12, 2), (12, 3), (10, 2)])
def test_len_per_rank_matches_its_batches_when_ranks_are_even(n, world):
    for rank in range(world):
        batches = indexed(n, 2, shuffle=True, rank=rank, world=world)
        assert len(batches) == sum(1 for _ in batches)


@pytest.mark.parametrize("shuffle", [False, True])
def test_len_per_rank_matches_its_batches_when_ranks_are_uneven(shuffle):
    counts = []
    for rank in range(2):
        batches = indexed(5, 2, shuffle=shuffle, rank=rank, world=2)
        counts.append(sum(1 for _ in batches))
        assert len(batches) == counts[-1]
    assert counts[0] == counts[1]


def test_lightning_finds_set_epoch_on_the_sampler_attribute():
    batches = indexed(6, 2, shuffle=True)
    assert batches.sampler is batches and batches.batch_sampler is None
    batches.sampler.set_epoch(4)
    assert batches.epoch == 4


# input_stats


def normalized(x, normalize):
    shift, scale = input_stats(x, normalize)
    return (x - shift) / scale, shift, scale


def test_standardize_images_per_channel():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([5.0, -3.0, 100.0]).view(1, 3, 1, 1)
    stds = torch.tensor([2.0, 0.1, 30.0]).view(1, 3, 1, 1)
    x = torch.randn(40, 3, 6, 5, generator=g) * stds + means
    z, shift, scale = normalized(x, "standardize")
    assert shift.shape == scale.shape == (3, 1, 1)
    per_channel = z.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(3), atol=1e-3, rtol=0)


def test_standardize_signals_per_channel():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 2, 40, generator=g) * torch.tensor([3.0, 0.5]).view(1, 2, 1) + torch.tensor([1.0, 7.0]).view(1, 2, 1)
    z, shift, scale = normalized(x, "standardize")
    assert shift.shape == (2, 1)
    per_channel = z.transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(2), atol=1e-3, rtol=0)


def test_standardize_vectors_per_feature():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 4, generator=g) * torch.tensor([1.0, 10.0, 0.01, 5.0]) + torch.tensor([0.0, -50.0, 3.0, 8.0])
    z, shift, scale = normalized(x, "standardize")
    assert shift.shape == scale.shape == (4,)
    torch.testing.assert_close(z.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(4), atol=1e-2, rtol=0)


def test_minmax_maps_the_training_split_to_0_1_per_channel():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(30, 2, 4, 4, generator=g) * torch.tensor([16.0, 0.5]).view(1, 2, 1, 1) - torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)
    z, _, _ = normalized(x, "minmax")
    per_channel = z.transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(per_channel.min(1).values, torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(per_channel.max(1).values, torch.ones(2), atol=1e-6, rtol=0)


def test_minmax_vectors_per_feature():
    x = torch.tensor([[0.0, 10.0], [2.0, 30.0], [4.0, 20.0]])
    z, _, _ = normalized(x, "minmax")
    torch.testing.assert_close(z, torch.tensor([[0.0, 0.0], [0.5, 1.0], [1.0, 0.5]]))


@pytest.mark.parametrize("shape", [(5, 3, 4, 4), (5, 2, 7), (5, 6)])
def test_none_is_the_identity(shape):
    x = torch.randn(shape) * 4 + 2
    z, shift, scale = normalized(x, "none")
    assert torch.equal(z, x)
    assert shift.shape == scale.shape == (shape[1],) + (1,) * (len(shape) - 2)


@pytest.mark.parametrize("normalize", ["standardize", "minmax"])
def test_constant_channels_do_not_divide_by_zero(normalize):
    x = torch.randn(20, 2, 3, 3)
    x[:, 1] = 7.0
    z, _, scale = normalized(x, normalize)
    assert torch.isfinite(z).all()
    assert (scale > 0).all()
    assert torch.equal(z[:, 1], torch.zeros_like(z[:, 1]))
    v = torch.randn(20, 3)
    v[:, 0] = -1.5
    zv, _, _ = normalized(v, normalize)
    assert torch.isfinite(zv).all() and torch.equal(zv[:, 0], torch.zeros(20))


def test_stats_are_float32_even_for_integer_inputs():
    x = torch.randint(0, 255, (10, 1, 4, 4), dtype=torch.uint8)
    for name in ("standardize", "minmax", "none"):
        shift, scale = input_stats(x, name)
        assert shift.dtype == scale.dtype == torch.float32


@pytest.mark.parametrize("name", ["zscore", "Standardize", ""])
def test_unknown_normalize_raises_user_error_naming_the_key(name):
    with pytest.raises(UserError, match=r"data\.normalize") as err:
        input_stats(torch.randn(4, 3), name)
    assert "standardize" in str(err.value) and "minmax" in str(err.value)


# InMemoryDataModule


def splits(shape=(1, 5, 5), n=(30, 10, 10), seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in n:
        out += [torch.randn(k, *shape, generator=g) * 3 + 1, torch.randint(0, 3, (k,), generator=g)]
    return out


def test_in_shape_and_num_classes():
    dm = InMemoryDataModule(*splits(shape=(2, 6, 4)), classes=["a", "b", "c"])
    assert dm.in_shape == (2, 6, 4)
    assert dm.num_classes == 3
    vec = InMemoryDataModule(*splits(shape=(7,)), classes=list("abcde"))
    assert vec.in_shape == (7,) and vec.num_classes == 5


def test_stats_come_from_the_training_split_only():
    x_tr, y_tr, x_va, y_va, x_te, y_te = splits()
    for normalize in ("standardize", "minmax"):
        dm = InMemoryDataModule(x_tr, y_tr, x_va, y_va, x_te, y_te, classes="abc", normalize=normalize)
        other = InMemoryDataModule(x_tr, y_tr, x_va * 100 + 50, y_va, x_te - 1000, y_te, classes="abc",
                                   normalize=normalize)
        expected = input_stats(x_tr, normalize)
        for stats in (dm, other):
            torch.testing.assert_close(stats.shift, expected[0])
            torch.testing.assert_close(stats.scale, expected[1])
        # and they are not the statistics of all the data together
        everything = input_stats(torch.cat([x_tr, x_va * 100 + 50, x_te - 1000]), normalize)
        assert not torch.allclose(other.shift, everything[0])


def test_splits_are_float32_and_int64_and_served_whole():
    x_tr, y_tr, x_va, y_va, x_te, y_te = splits(n=(13, 6, 5))
    dm = InMemoryDataModule(x_tr.double(), y_tr.int(), x_va, y_va, x_te, y_te, classes="abc", batch_size=4)
    dm.setup("fit")
    for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        xs, ys = zip(*loader)
        assert all(x.dtype == torch.float32 for x in xs) and all(y.dtype == torch.int64 for y in ys)
        assert sum(len(y) for y in ys) == len(dm.splits[split][1])
    # validation and test are served in order, training is shuffled
    assert torch.equal(torch.cat([y for _, y in dm.val_dataloader()]), y_va.long())
    assert torch.equal(torch.cat([x for x, _ in dm.test_dataloader()]), x_te)
    assert dm.train_dataloader().shuffle and not dm.val_dataloader().shuffle


def test_training_batches_use_the_data_seed():
    a = InMemoryDataModule(*splits(n=(40, 5, 5)), classes="abc", batch_size=8, seed=1)
    b = InMemoryDataModule(*splits(n=(40, 5, 5)), classes="abc", batch_size=8, seed=2)
    ya = torch.cat([y for _, y in a.train_dataloader()])
    ya2 = torch.cat([y for _, y in a.train_dataloader()])
    xa = torch.cat([x for x, _ in a.train_dataloader()])
    xb = torch.cat([x for x, _ in b.train_dataloader()])
    assert torch.equal(ya, ya2)
    assert not torch.equal(xa, xb)


@pytest.mark.parametrize("bad", ["mismatch", "empty"])
def test_a_broken_split_raises_user_error(bad):
    x_tr, y_tr, x_va, y_va, x_te, y_te = splits()
    if bad == "mismatch":
        y_va = y_va[:-1]
    else:
        x_tr, y_tr = x_tr[:0], y_tr[:0]
    with pytest.raises(UserError, match="val split" if bad == "mismatch" else "train split"):
        InMemoryDataModule(x_tr, y_tr, x_va, y_va, x_te, y_te, classes="abc", name="mine")


def test_unknown_normalize_in_the_datamodule_raises_user_error():
    with pytest.raises(UserError, match=r"data\.normalize=zscore"):
        InMemoryDataModule(*splits(), classes="abc", normalize="zscore")
