"""The contrastive loss sees the global batch under real 2-process DDP (gloo, CPU).

Two processes each hold half of a batch; the model is wrapped in ``DistributedDataParallel`` (which
averages gradients across ranks). The loss and the gradients must equal those of one process on
the whole batch.
"""

from __future__ import annotations

import torch

from neurodecode.losses import AlignmentLoss, clip_loss

WORLD = 2
N, D_IN, D_OUT = 8, 12, 6
CONFIGS = {
    "clip": dict(contrastive="clip"),
    "clip_local": dict(contrastive="clip", local_loss=True),
    "softclip": dict(contrastive="softclip", target_temperature=0.5),
    "mixture_text": dict(contrastive="clip", regression="mse", contrastive_weight=0.75, text_weight=0.01),
}


class _Model(torch.nn.Module):
    def __init__(self, loss_kwargs):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Sequential(torch.nn.Linear(D_IN, 16), torch.nn.GELU(), torch.nn.Linear(16, D_OUT))
        self.loss = AlignmentLoss(**loss_kwargs)

    def forward(self, x, img, txt):
        total, _ = self.loss(self.encoder(x), img, txt)
        return total


def _data():
    g = torch.Generator().manual_seed(123)
    return torch.randn(N, D_IN, generator=g), torch.randn(N, D_OUT, generator=g), torch.randn(N, D_OUT, generator=g)


def _grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


def _worker(rank, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, img, txt = _data()
        rows = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        result = {}
        for name, kwargs in CONFIGS.items():
            model = torch.nn.parallel.DistributedDataParallel(_Model(kwargs))
            loss = model(x[rows], img[rows], txt[rows])
            loss.backward()
            result[name] = {"loss": loss.detach(), "grads": _grads(model.module)}
        # what a loss without gathering would give on this rank (the test must tell them apart)
        result["local_only"] = clip_loss(x[rows] @ torch.ones(D_IN, D_OUT), img[rows], 1 / 0.07).detach()
        # unequal local batches cannot be gathered: a clear error on every rank, not a hang
        emb = torch.randn(4 if rank == 0 else 3, D_OUT)
        try:
            AlignmentLoss()(emb, emb)
            result["unequal_error"] = "no error"
        except ValueError as err:
            result["unequal_error"] = str(err)
        torch.save(result, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank tears down while the other may still be in a collective
    finally:
        dist.destroy_process_group()


def test_contrastive_loss_sees_the_global_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(str(tmp_path / "pg_init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    x, img, txt = _data()
    for name, kwargs in CONFIGS.items():
        single = _Model(kwargs)
        loss = single(x, img, txt)
        loss.backward()
        expected = _grads(single)
        losses = torch.stack([r[name]["loss"] for r in ranks])
        if name in ("clip", "softclip"):
            # every rank computes the loss over the global batch
            torch.testing.assert_close(losses, loss.detach().expand(WORLD), rtol=1e-5, atol=1e-6)
        else:
            # local rows (or a per-example regression term): the mean over ranks is the global loss
            torch.testing.assert_close(losses.mean(), loss.detach(), rtol=1e-5, atol=1e-6)
        for r in ranks:
            assert set(r[name]["grads"]) == set(expected)
            for key, g in expected.items():
                torch.testing.assert_close(r[name]["grads"][key], g, rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")

    # sanity: half a batch alone gives another loss, so the equality above is not a coincidence
    full = clip_loss(x @ torch.ones(D_IN, D_OUT), img, 1 / 0.07)
    for r in ranks:
        assert abs(float(r["local_only"]) - float(full)) > 1e-3
        assert "same batch size on every rank" in r["unequal_error"]
