"""The device-resident store gives the batches (and so the training) of the usual DataLoader path."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from conftest import FEATURE_TEACHER

from neurodecode.training.data import BrainImageDataModule
from neurodecode.training.device_store import DeviceBatches


def _epochs(loader, epochs=(0, 1)):
    """The batches of each epoch, with the epoch set as Lightning sets it (on ``loader.sampler``)."""
    out = []
    for e in epochs:
        if getattr(loader, "sampler", None) is not None and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(e)
        out.append(list(loader))
    return out


@pytest.mark.parametrize("protocol", ["intra", "joint"])
def test_device_store_gives_the_dataloaders_batches(sim_eeg, protocol):
    kw = dict(teacher=FEATURE_TEACHER, protocol=protocol, subject="01", batch_size=16, eval_batch_size=12, seed=3)
    plain = BrainImageDataModule(str(sim_eeg), **kw)
    store = BrainImageDataModule(str(sim_eeg), device_store=True, **kw)
    for dm in (plain, store):
        dm.setup("fit")
        dm.setup("test")
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        a_loader, b_loader = getattr(plain, name)(), getattr(store, name)()
        assert isinstance(b_loader, DeviceBatches) and len(a_loader) == len(b_loader)
        a_epochs, b_epochs = _epochs(a_loader), _epochs(b_loader)
        assert len(a_epochs[0]) == len(a_loader)
        for a_batches, b_batches in zip(a_epochs, b_epochs, strict=True):
            assert len(a_batches) == len(b_batches)
            for a, b in zip(a_batches, b_batches, strict=True):
                assert set(a) == set(b)
                for key in a:
                    assert a[key].dtype == b[key].dtype, key
                    assert torch.equal(a[key], b[key]), (name, key)
        if name == "train_dataloader":  # a new order every epoch, one drawn from the seed
            assert not torch.equal(a_epochs[0][0]["index"], a_epochs[1][0]["index"])


def _fit(root, device_store: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Initial and final weights of 2 epochs of a small MLP (fixed seeds, deterministic CPU)."""
    from neurodecode.encoders import MLP
    from neurodecode.training.lit import AlignmentModule

    L.seed_everything(0, verbose=False)
    dm = BrainImageDataModule(str(root), teacher=FEATURE_TEACHER, subject="01", batch_size=16, seed=1,
                              device_store=device_store)
    enc = MLP(n_chans=dm.n_chans, n_times=dm.n_times, n_outputs=dm.embed_dim, hidden_sizes=[32])
    module = AlignmentModule(enc, n_chans=dm.n_chans, lr=3e-3, seed=0)
    initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    trainer.fit(module, datamodule=dm)
    return initial, {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_device_store_trains_the_same_model(sim_eeg):
    (init_a, a), (init_b, b) = _fit(sim_eeg, False), _fit(sim_eeg, True)
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(init_a[k], init_b[k]), k  # the same start ...
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)  # ... the same end
    weights = [k for k in a if k.startswith("encoder.") and a[k].is_floating_point()]
    assert weights and any(not torch.equal(a[k], init_a[k]) for k in weights)  # and training moved them


def test_device_store_shards_an_epoch_across_ranks(sim_eeg):
    dm = BrainImageDataModule(str(sim_eeg), teacher=FEATURE_TEACHER, protocol="joint", batch_size=8, seed=5)
    dm.setup("fit")
    ts = dm.sets["train"]
    single = DeviceBatches(ts, batch_size=8, shuffle=True, seed=5)
    single.set_epoch(2)
    order = torch.cat([b["index"] for b in single])
    ranks = [DeviceBatches(ts, batch_size=8, shuffle=True, seed=5, rank=r, world_size=3) for r in range(3)]
    seen = []
    for r in ranks:
        r.set_epoch(2)
        batches = list(r)
        assert len(batches) == len(r) == len(ranks[0])  # every rank runs the same number of steps
        seen.append(torch.cat([b["index"] for b in batches]))
    got = torch.cat(seen)
    assert len(set(got.tolist())) == len(got)  # no sample twice in an epoch
    full = torch.tensor(list(iter(single.sampler)))
    per = len(ts) // 3
    for r in range(3):  # rank r takes every third sample of the single-process order, from r
        np.testing.assert_array_equal(seen[r].numpy(), full[r:per * 3:3][:len(seen[r])].numpy())
    assert set(order.tolist()) <= set(range(len(ts)))
    # evaluation keeps every sample, spread over the ranks
    dm_val = [DeviceBatches(dm.sets["val"], batch_size=7, shuffle=False, rank=r, world_size=3) for r in range(3)]
    val = sorted(torch.cat([b["index"] for d in dm_val for b in d]).tolist())
    assert val == list(range(len(dm.sets["val"])))


def test_device_store_needs_the_set_in_memory(sim_eeg):
    with pytest.raises(ValueError, match="preload=True"):
        BrainImageDataModule(str(sim_eeg), teacher=FEATURE_TEACHER, subject="01", preload=False, device_store=True)
    dm = BrainImageDataModule(str(sim_eeg), teacher=FEATURE_TEACHER, subject="01", preload=False)
    dm.setup("fit")
    with pytest.raises(ValueError, match="in memory"):
        DeviceBatches(dm.sets["train"], batch_size=4, shuffle=True)
