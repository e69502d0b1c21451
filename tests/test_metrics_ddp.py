"""The metric classes give the same numbers under 2-process DDP (gloo, CPU) as in one process."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

N_ITEMS, DIM, N_CLASSES = 61, 12, 5  # odd on purpose: the two ranks hold different numbers of rows


def make_data():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    brain = (image + 1.5 * rng.standard_normal((N_ITEMS, DIM))).astype(np.float32)
    prompts = rng.standard_normal((N_CLASSES, 2, DIM)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, size=N_ITEMS)
    return brain, image, prompts, labels


def build_metrics(prompts):
    from neurodecode.evaluation.classification import ClassificationMetrics, ZeroShotClassification
    from neurodecode.evaluation.retrieval_metric import ZeroShotRetrieval

    return {
        "exact": ZeroShotRetrieval(ks=(2, 10, 50), csls_k=5),
        "monte_carlo": ZeroShotRetrieval(ks=(2, 10), method="monte_carlo", n_draws=20, seed=3),
        "zero_shot_cls": ZeroShotClassification(prompts, tops=(1, 3)),
        "supervised_cls": ClassificationMetrics(tops=(1, 3)),
    }


def feed(metrics, brain, image, prompts, labels, rows, batch=7):
    from neurodecode.evaluation.classification import zero_shot_logits

    logits = zero_shot_logits(brain, prompts)
    for start in range(0, len(rows), batch):
        r = rows[start: start + batch]
        metrics["exact"].update(torch.from_numpy(brain[r]), torch.from_numpy(image[r]))
        metrics["monte_carlo"].update(torch.from_numpy(brain[r]), torch.from_numpy(image[r]), ids=torch.from_numpy(r))
        metrics["zero_shot_cls"].update(torch.from_numpy(brain[r]), torch.from_numpy(labels[r]))
        metrics["supervised_cls"].update(logits[r], torch.from_numpy(labels[r]))


def results(metrics):
    return {name: {k: float(v) for k, v in m.compute().items()} for name, m in metrics.items()}


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    # a file store, not TCP: no port to race for, and no store server in rank 0 that could go away
    # while rank 1 is still tearing down
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        brain, image, prompts, labels = make_data()
        # a DistributedSampler-like split: interleaved rows, the last row padded onto rank 1 again
        rows = np.arange(N_ITEMS)[rank::world_size]
        metrics = build_metrics(prompts)
        feed(metrics, brain, image, prompts, labels, rows)
        if rank == 1:  # DistributedSampler pads with repeated samples; ids let the metric drop them
            metrics["monte_carlo"].update(torch.from_numpy(brain[:1]), torch.from_numpy(image[:1]),
                                          ids=torch.tensor([0]))
        out = results(metrics)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
        dist.barrier()  # no rank leaves while the other may still be in a collective
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_equals_single_process(tmp_path):
    brain, image, prompts, labels = make_data()
    single_metrics = build_metrics(prompts)
    # a different row order in one process: the exact method must not care, and ids fix the MC order
    feed(single_metrics, brain, image, prompts, labels, np.random.default_rng(1).permutation(N_ITEMS))
    single = results(single_metrics)
    mp.spawn(_worker, args=(2, str(tmp_path / "pg_init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        ddp = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert ddp.keys() == single.keys()
        for name in single:
            assert ddp[name].keys() == single[name].keys(), name
            for key, value in single[name].items():
                assert ddp[name][key] == pytest.approx(value, abs=1e-9), (rank, name, key)
    # the numbers are real: above chance, and the transductive ones are kept apart
    assert single["exact"]["brain_to_image/top1_2way"] > 0.6
    assert "transductive/brain_to_image/top1_10way" in single["exact"]
    assert single["monte_carlo"]["image_to_brain/top1_10way"] > 0.1
