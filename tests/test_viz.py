"""Figures: content of each plot (titles, images, frames, bars, lines), saving, validation, no pyplot leaks."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex, to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from neurodecode.reporting import figures as viz  # noqa: E402


@pytest.fixture(autouse=True)
def _no_pyplot_leak():
    """Every test must leave pyplot's figure manager empty (show=False builds figures without pyplot)."""
    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a plotting function left a pyplot figure open"


def _solid(rgb, size=(20, 30)):
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (*size, 3)).copy()


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.get_images()]


def _all_text(fig):
    texts = [fig.get_suptitle()]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.texts]
        if ax.get_legend() is not None:
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    for leg in fig.legends:
        texts += [t.get_text() for t in leg.get_texts()]
    return "\n".join(texts)


# --------------------------------------------------------------------------------------------------
# retrieval strip
# --------------------------------------------------------------------------------------------------
def _strip_inputs(n=3, k=4):
    colours = [(255, 0, 0), (0, 0, 255), (0, 160, 0), (250, 200, 0), (120, 0, 200), (0, 200, 200)]
    seen = [_solid(colours[i]) for i in range(n)]
    guess_idx = np.array([[(i + j) % len(colours) for j in range(k)] for i in range(n)])
    guess_idx[1] = [5, 4, 1, 3]  # query 1: the correct image at rank 3
    guess_idx[2] = [0, 3, 4, 5]  # query 2: a miss
    guesses = [[_solid(colours[j]) for j in row] for row in guess_idx]
    hits = guess_idx == np.arange(n)[:, None]
    return seen, guesses, hits, guess_idx


def test_retrieval_strip_panels_frames_and_title():
    seen, guesses, hits, _ = _strip_inputs()
    scores = np.linspace(0.9, 0.1, 12).reshape(3, 4)
    fig = viz.plot_retrieval_strip(seen, guesses, hits, seen_labels=["red", "blue", "green"],
                                   guess_labels=[["a", "b", "c", "d"]] * 3, scores=scores, n_candidates=200,
                                   title="Sim data, sub-01")
    assert isinstance(fig, Figure)
    axes = _image_axes(fig)
    assert len(axes) == 3 * (1 + 4)
    for i in range(3):
        row = axes[i * 5:(i + 1) * 5]
        # the seen panel has a neutral frame and shows the seen image's colour
        assert to_hex(row[0].spines["top"].get_edgecolor()) == viz.SEEN_COLOR
        shown = row[0].get_images()[0].get_array()
        assert tuple(shown[48, 48]) == tuple(seen[i][0, 0])
        for j, ax in enumerate(row[1:]):
            want = viz.HIT_COLOR if hits[i, j] else viz.MISS_COLOR
            for side in ("top", "bottom", "left", "right"):
                assert to_hex(ax.spines[side].get_edgecolor()) == want
            assert tuple(ax.get_images()[0].get_array()[48, 48]) == tuple(guesses[i][j][0, 0])
    # labels and scores under the thumbnails; check marks tell hits apart without colour
    assert axes[0].get_xlabel().strip() == "red"  # padded to the height of the guesses' labels
    assert axes[1].get_xlabel().startswith("\N{CHECK MARK} a") and "0.9" in axes[1].get_xlabel()
    assert axes[2].get_xlabel().startswith("\N{BALLOT X} b")
    title = fig.get_suptitle()
    assert "Sim data, sub-01" in title and "Top-4" in title and "green" in title
    assert "top-1: 1/3" in title and "top-4: 2/3" in title
    assert "0.5%" in title and "2.0%" in title  # chance 1/200 and 4/200
    assert axes[0].get_title() == "seen" and axes[1].get_title() == "guess 1"


def test_retrieval_strip_accepts_every_image_kind(tmp_path):
    path = tmp_path / "blue.png"
    Image.fromarray(_solid((0, 0, 255), (40, 40))).save(path)
    seen = [
        np.full((16, 16, 3), 0.5),                       # float in [0, 1]
        Image.fromarray(_solid((0, 255, 0))),            # PIL image
        str(path),                                       # file path
        np.full((10, 12), 200, dtype=np.uint8),          # grey
    ]
    guesses = [[path, np.zeros((8, 8, 4), np.uint8)]] * 4  # path object, transparent RGBA -> white
    fig = viz.plot_retrieval_strip(seen, guesses, np.zeros((4, 2), bool), n_rows=3, thumbnail_size=32)
    axes = _image_axes(fig)
    assert len(axes) == 3 * 3  # n_rows=3 of 4 queries
    arrays = [ax.get_images()[0].get_array() for ax in axes]
    assert all(a.shape == (32, 32, 3) for a in arrays)
    assert tuple(arrays[0][16, 16]) == (128, 128, 128)
    assert tuple(arrays[3][16, 16]) == (0, 255, 0)
    assert tuple(arrays[6][16, 16]) == (0, 0, 255)
    assert tuple(arrays[2][16, 16]) == (255, 255, 255)
    # non-square images keep their aspect ratio: padded with white
    assert tuple(arrays[0][16, 16]) != (255, 255, 255)
    assert "Rows shown: 3 of 4" in fig.get_suptitle()


@pytest.mark.parametrize("change, match", [
    (lambda s, g, h: (s[:2], g, h), "guess_images has 3 rows but seen_images has 2"),
    (lambda s, g, h: (s, [g[0], g[1], g[2][:2]], h), "same number k"),
    (lambda s, g, h: (s, g, h[:, :2]), r"hits must have shape \(n_queries, k\) = \(3, 4\)"),
    (lambda s, g, h: ([np.zeros((5, 5, 2))] + s[1:], g, h), r"seen_images\[0\].*\(H, W, 3\)"),
    (lambda s, g, h: ([np.zeros((3, 9, 9))] + s[1:], g, h), "channel-first"),
    (lambda s, g, h: ([np.full((4, 4, 3), 255.0)] + s[1:], g, h), r"\[0, 1\].*divide"),
    (lambda s, g, h: (s, [[*g[0][:3], "missing.png"], g[1], g[2]], h), r"guess_images\[0\]\[3\].*does not exist"),
])
def test_retrieval_strip_bad_inputs(change, match):
    seen, guesses, hits, _ = _strip_inputs()
    s, g, h = change(seen, guesses, hits)
    with pytest.raises(ValueError, match=match):
        viz.plot_retrieval_strip(s, g, h)


def test_retrieval_strip_label_lengths_checked():
    seen, guesses, hits, _ = _strip_inputs()
    with pytest.raises(ValueError, match="seen_labels has 2 names"):
        viz.plot_retrieval_strip(seen, guesses, hits, seen_labels=["a", "b"])
    with pytest.raises(ValueError, match=r"scores must have shape"):
        viz.plot_retrieval_strip(seen, guesses, hits, scores=np.zeros((3, 3)))


# --------------------------------------------------------------------------------------------------
# similarity matrix
# --------------------------------------------------------------------------------------------------
def test_similarity_matrix_marks_best_match_per_row():
    rng = np.random.default_rng(0)
    sim = rng.uniform(0, 0.5, (6, 8))
    sim[np.arange(6), np.arange(6)] = 1.0  # rows 0..5 hit ...
    sim[2, 7] = 2.0  # ... except row 2, whose best match is column 7
    sim[4, 0] = 3.0  # and row 4 (column 0)
    fig = viz.plot_similarity_matrix(sim, labels=[f"c{i}" for i in range(8)], title="Sim sub-02",
                                     cbar_label="cosine similarity")
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), sim)
    hit_dots, miss_dots = (c.get_offsets() for c in ax.collections[:2])
    np.testing.assert_array_equal(np.asarray(hit_dots), [[0, 0], [1, 1], [3, 3], [5, 5]])
    np.testing.assert_array_equal(np.asarray(miss_dots), [[7, 2], [0, 4]])
    assert "4/6" in ax.get_title() and "chance 12.5%" in ax.get_title() and "Sim sub-02" in ax.get_title()
    assert "brain" in ax.get_ylabel() and "candidate image" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"c{i}" for i in range(8)]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"c{i}" for i in range(6)]
    assert fig.axes[1].get_ylabel() == "cosine similarity"  # the colour bar


def test_similarity_matrix_no_tick_labels_when_many_and_bad_inputs():
    sim = np.eye(50)
    fig = viz.plot_similarity_matrix(sim, labels=[f"img{i}" for i in range(50)], max_tick_labels=40)
    assert "50/50" in fig.axes[0].get_title()
    assert not any(t.get_text().startswith("img") for t in fig.axes[0].get_xticklabels())
    with pytest.raises(ValueError, match="more rows|at least as many columns"):
        viz.plot_similarity_matrix(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="labels has 2 names but similarity has 3 columns"):
        viz.plot_similarity_matrix(np.zeros((3, 3)), labels=["a", "b"])
    with pytest.raises(ValueError, match="2-D"):
        viz.plot_similarity_matrix(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        viz.plot_similarity_matrix(np.array([[0.0, np.nan], [1, 0]]))


# --------------------------------------------------------------------------------------------------
# accuracy vs k
# --------------------------------------------------------------------------------------------------
def test_accuracy_vs_k_curves_chance_and_log_axis():
    ks = [2, 4, 10, 50, 200]
    acc = {"top-1": [0.9, 0.7, 0.5, 0.2, 0.08], "top-5": [1.0, 1.0, 0.8, 0.5, 0.25]}
    ci = {"top-1": ([0.85, 0.65, 0.45, 0.15, 0.05], [0.95, 0.75, 0.55, 0.25, 0.11])}
    fig = viz.plot_accuracy_vs_k(ks, acc, ci=ci, title="THINGS-EEG2 sub-01")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    np.testing.assert_array_equal(ax.get_xticks(), ks)
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in ks]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    np.testing.assert_allclose(lines["top-1"].get_ydata(), acc["top-1"])
    chance1 = lines["chance top-1 (1/k)"]
    chance5 = lines["chance top-5 (min(5, k)/k)"]
    assert chance1.get_linestyle() == "--"
    for k in ks:  # the chance curves pass through 1/k and min(5, k)/k
        i = int(np.argmin(np.abs(chance1.get_xdata() - k)))
        assert chance1.get_ydata()[i] == pytest.approx(1 / k)
        assert chance5.get_ydata()[i] == pytest.approx(min(5, k) / k)
    # the confidence interval is drawn as error bars spanning (low, high)
    segs = [c for c in ax.collections if c.get_segments()]
    assert len(segs) == 1
    spans = sorted((s[:, 1].min(), s[:, 1].max()) for s in segs[0].get_segments())
    np.testing.assert_allclose(spans, sorted(zip(*ci["top-1"], strict=True)))
    title = ax.get_title()
    assert "THINGS-EEG2 sub-01" in title and "k-way" in title and "chance" in title
    assert "accuracy" in ax.get_ylabel() and "k" in ax.get_xlabel()


def test_accuracy_vs_k_without_chance_and_bad_inputs():
    fig = viz.plot_accuracy_vs_k([2, 10], {"model A": [0.8, 0.4]}, chance=False)
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["model A"]
    fig = viz.plot_accuracy_vs_k([2, 10], {"model A": [0.8, 0.4]})  # no top-n in the name: 1/k
    assert "chance top-1 (1/k)" in [ln.get_label() for ln in fig.axes[0].get_lines()]
    with pytest.raises(ValueError, match=r"accuracies\['top-1'\] has 2 values but ks has 3"):
        viz.plot_accuracy_vs_k([2, 4, 10], {"top-1": [0.5, 0.3]})
    with pytest.raises(ValueError, match="fractions in \\[0, 1\\].*divide percentages by 100"):
        viz.plot_accuracy_vs_k([2, 4], {"top-1": [90, 70]})
    with pytest.raises(ValueError, match="ci has curve name 'top-5'"):
        viz.plot_accuracy_vs_k([2, 4], {"top-1": [0.9, 0.7]}, ci={"top-5": ([0, 0], [1, 1])})
    with pytest.raises(ValueError, match="positive integers"):
        viz.plot_accuracy_vs_k([0.5, 4], {"top-1": [0.9, 0.7]})


# --------------------------------------------------------------------------------------------------
# time-resolved
# --------------------------------------------------------------------------------------------------
def _poly_extents(ax):
    """(xmin, xmax, ymin, ymax) of every filled polygon on ``ax``."""
    out = []
    for c in ax.collections:
        for p in c.get_paths():
            v = p.vertices
            if len(v):
                out.append((v[:, 0].min(), v[:, 0].max(), v[:, 1].min(), v[:, 1].max()))
    return out


def test_time_resolved_single_curve():
    t = np.round(np.arange(-0.1, 0.5, 0.01), 3)
    y = 0.01 + 0.1 * np.exp(-((t - 0.17) / 0.04) ** 2)
    sig = ((t >= 0.12) & (t <= 0.22)) | (t == 0.4)  # one window and one isolated time point
    fig = viz.plot_time_resolved(t, y, ci_low=y - 0.01, ci_high=y + 0.01, chance=0.01,
                                 ylabel="top-1 accuracy (200-way)", highlight=(0.13, 0.2, "N170"),
                                 significant=sig, title="N170 sub-03")
    ax = fig.axes[0]
    curve = [ln for ln in ax.get_lines() if ln.get_label().startswith("top-1 accuracy")]
    assert len(curve) == 1 and "peak 0.11 at 170 ms" in curve[0].get_label()
    np.testing.assert_allclose(curve[0].get_ydata(), y)
    chance = [ln for ln in ax.get_lines() if ln.get_label().startswith("chance")]
    assert np.allclose(chance[0].get_ydata(), 0.01)
    onset = [ln for ln in ax.get_lines() if ln.get_label() == "stimulus onset"]
    assert np.allclose(onset[0].get_xdata(), 0.0)
    ext = _poly_extents(ax)
    # confidence band: spans the whole time range, from low to high
    band = [e for e in ext if e[0] == pytest.approx(t[0]) and e[1] == pytest.approx(t[-1])]
    assert band and band[0][2] == pytest.approx((y - 0.01).min()) and band[0][3] == pytest.approx((y + 0.01).max())
    # significance bar: covers the significant window (step='mid': half a step either side) below the curve
    bar = sorted(e for e in ext if e[1] - e[0] < 0.2 and e[3] < y.min())
    assert len(bar) == 2
    assert bar[0][0] == pytest.approx(0.115, abs=1e-6) and bar[0][1] == pytest.approx(0.225, abs=1e-6)
    assert bar[1][0] == pytest.approx(0.395, abs=1e-6) and bar[1][1] == pytest.approx(0.405, abs=1e-6)
    assert ax.get_ylim()[0] < bar[0][2]
    # highlighted window, labelled
    span = [p for p in _bars(ax) if p.get_x() == pytest.approx(0.13) and p.get_width() == pytest.approx(0.07)]
    assert len(span) == 1
    assert "N170" in [tx.get_text() for tx in ax.texts]
    assert "(s)" in ax.get_xlabel() and ax.get_ylabel() == "top-1 accuracy (200-way)"
    assert any("ms" in child.get_xlabel() for child in ax.child_axes)  # secondary axis in milliseconds
    title = ax.get_title()
    assert "N170 sub-03" in title and "Time-resolved" in title and "chance 0.01" in title
    assert "130-200 ms" in title


def test_time_resolved_several_curves_and_bad_inputs():
    t = np.linspace(-0.2, 0.6, 41)
    curves = {f"sub-{i}": np.sin(t * (i + 1)) * 0.1 + 0.2 for i in range(3)}
    fig = viz.plot_time_resolved(t, curves, chance=0.2, onset=None,
                                 significant={"sub-1": t > 0.1, "sub-2": t > 0.3})
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert sum(lab.startswith("sub-") for lab in labels) == 3
    assert "stimulus onset" not in labels
    assert "significant (bar in the curve's colour)" in _all_text(fig)
    with pytest.raises(ValueError, match="strictly increasing"):
        viz.plot_time_resolved(t[::-1], np.zeros(41))
    with pytest.raises(ValueError, match="scores has 40 values but times has 41"):
        viz.plot_time_resolved(t, np.zeros(40))
    with pytest.raises(ValueError, match="must be a dict name -> array"):
        viz.plot_time_resolved(t, curves, significant=t > 0)
    with pytest.raises(ValueError, match="not in scores"):
        viz.plot_time_resolved(t, curves, ci_low={"sub-9": t}, ci_high={"sub-9": t})
    with pytest.raises(ValueError, match="end > start"):
        viz.plot_time_resolved(t, np.zeros(41), highlight=(0.2, 0.1))


# --------------------------------------------------------------------------------------------------
# per-subject bars
# --------------------------------------------------------------------------------------------------
def _bars(ax):
    from matplotlib.patches import Rectangle

    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_subject_bars_grouped_with_mean_sd():
    subjects = ["sub-01", "sub-02", "sub-03", "sub-04"]
    intra = np.array([0.30, 0.20, 0.25, 0.15])
    loso = np.array([0.10, 0.08, 0.12, 0.06])
    fig = viz.plot_subject_bars(subjects, {"intra-subject": intra, "leave-one-subject-out": loso},
                                errors={"intra-subject": [0.01] * 4}, chance=0.005, title="THINGS-EEG2")
    ax = fig.axes[0]
    bars = _bars(ax)
    assert len(bars) == 2 * (4 + 1)
    heights = [b.get_height() for b in bars]
    np.testing.assert_allclose(heights[:4], intra)
    np.testing.assert_allclose(heights[4], intra.mean())
    np.testing.assert_allclose(heights[5:9], loso)
    assert [b.get_gid() for b in bars].count("mean") == 2
    text = _all_text(fig)
    assert f"mean {intra.mean():.3g} \N{PLUS-MINUS SIGN} {intra.std(ddof=1):.3g} sd (n=4)" in text
    assert "leave-one-subject-out" in text and "chance (0.005)" in text
    assert [t.get_text() for t in ax.get_xticklabels()][:4] == subjects
    assert "per subject" in ax.get_title() and "THINGS-EEG2" in ax.get_title()
    assert ax.get_ylabel() == "top-1 accuracy"


def test_subject_bars_array_forms_and_bad_inputs():
    fig = viz.plot_subject_bars(["a", "b"], [[0.5, 0.4], [0.3, 0.2]], groups=["x", "y"],
                                errors=[[0.1, 0.1], [0.05, 0.05]])
    assert len(_bars(fig.axes[0])) == 2 * 3
    fig = viz.plot_subject_bars(["a", "b", "c"], [0.5, 0.4, 0.6], errors=[[0.1, 0.1, 0.1], [0.2, 0.2, 0.2]])
    assert "0.5\n\N{PLUS-MINUS SIGN}0.1" in _all_text(fig)  # mean 0.5, sd 0.1, annotated on the mean bar
    with pytest.raises(ValueError, match="values must have one value per subject"):
        viz.plot_subject_bars(["a", "b"], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="give groups="):
        viz.plot_subject_bars(["a", "b"], [[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(ValueError, match=r"errors\['intra'\] must have one value per subject"):
        viz.plot_subject_bars(["a", "b"], {"intra": [0.1, 0.2]}, errors={"intra": [0.1]})
    with pytest.raises(ValueError, match="not in values"):
        viz.plot_subject_bars(["a", "b"], {"intra": [0.1, 0.2]}, errors={"loso": [0.1, 0.1]})


# --------------------------------------------------------------------------------------------------
# ablation
# --------------------------------------------------------------------------------------------------
def test_ablation_sorted_by_drop():
    names = ["frontal", "central", "temporal", "parietal", "occipital"]
    values = [0.24, 0.23, 0.20, 0.15, 0.08]
    fig = viz.plot_ablation(names, 0.25, values, errors=[0.01] * 5, chance=0.005, title="sub-01")
    ax = fig.axes[0]
    bars = _bars(ax)
    assert len(bars) == 5
    np.testing.assert_allclose([b.get_height() for b in bars], sorted(values))
    assert [t.get_text() for t in ax.get_xticklabels()] == names[::-1]
    base = [ln for ln in ax.get_lines() if ln.get_label().startswith("all channels")]
    assert np.allclose(base[0].get_ydata(), 0.25)
    assert [t.get_text() for t in ax.texts] == ["\N{MINUS SIGN}0.17", "\N{MINUS SIGN}0.1",
                                                "\N{MINUS SIGN}0.05", "\N{MINUS SIGN}0.02", "\N{MINUS SIGN}0.01"]
    assert "ablation" in ax.get_title() and "sub-01" in ax.get_title() and "chance 0.005" in ax.get_title()
    with pytest.raises(ValueError, match="values has 2 values but names has 5"):
        viz.plot_ablation(names, 0.25, [0.1, 0.2])
    with pytest.raises(ValueError, match="baseline must be one finite number"):
        viz.plot_ablation(names, [0.25, 0.3], values)


# --------------------------------------------------------------------------------------------------
# sensor importance
# --------------------------------------------------------------------------------------------------
def test_sensor_importance_topomap():
    pytest.importorskip("mne")
    names = ["Fz", "Cz", "Pz", "O1", "Oz", "O2", "T7", "T8"]
    values = np.array([0.0, 0.1, 0.5, 0.8, 1.0, 0.7, 0.2, 0.2])
    fig = viz.plot_sensor_importance(names, values, cbar_label="accuracy drop", n_names=3)
    title = fig.axes[0].get_title()
    assert "8 channels" in title and "Oz (1), O1 (0.8), O2 (0.7)" in title
    assert fig.axes[1].get_ylabel() == "accuracy drop"
    im = fig.axes[0].get_images()[0]
    assert im.get_clim() == pytest.approx((0.0, 1.0), abs=0.05)
    pos = np.random.default_rng(0).uniform(-0.08, 0.08, (8, 2))
    fig = viz.plot_sensor_importance(pos, values, ch_names=names, n_names=1)
    assert "highest: Oz" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="no position in the colin27_1005 montage"):
        viz.plot_sensor_importance(["Fz", "XYZ"], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"shape \(n_channels, 2\) = \(8, 2\)"):
        viz.plot_sensor_importance(np.zeros((8, 3)), values)


# --------------------------------------------------------------------------------------------------
# saving, show=True
# --------------------------------------------------------------------------------------------------
def test_save_figure_writes_png_atomically(tmp_path):
    fig = viz.plot_accuracy_vs_k([2, 10], {"top-1": [0.7, 0.3]})
    out = viz.save_figure(fig, tmp_path / "figs" / "acc_vs_k.png", dpi=50)
    assert out == tmp_path / "figs" / "acc_vs_k.png"
    with Image.open(out) as im:
        im.load()
        assert im.format == "PNG"
        assert im.size == (round(fig.get_figwidth() * 50), round(fig.get_figheight() * 50))
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.std() > 10  # something was drawn
    # the curve's colour is in the picture
    c0 = np.round(np.asarray(to_rgb("C0")) * 255)
    assert (np.abs(rgb.astype(int) - c0).sum(-1) < 30).sum() > 50
    assert sorted(p.name for p in out.parent.iterdir()) == ["acc_vs_k.png"]  # no temporary left
    with pytest.raises(ValueError, match="ending in one of"):
        viz.save_figure(fig, tmp_path / "fig.notaformat")
    with pytest.raises(ValueError, match="dpi must be a positive number"):
        viz.save_figure(fig, tmp_path / "fig.png", dpi=0)
    assert not (tmp_path / "fig.png").exists()


def test_show_true_uses_pyplot_and_shows(monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    fig = viz.plot_ablation(["a", "b"], 0.5, [0.4, 0.3], show=True)
    assert shown == [True]
    assert plt.get_fignums() == [fig.number]
    plt.close(fig)
    fig = viz.plot_ablation(["a", "b"], 0.5, [0.4, 0.3])
    assert shown == [True] and plt.get_fignums() == []


def test_figure_captions_say_what_bars_bands_and_rows_are():
    """The per-subject error bars, the time-resolved band and bars, and the strip's total are explained."""
    fig = viz.plot_subject_bars(["01", "02"], [0.5, 0.6], errors=[0.1, 0.1],
                                error_label="95% bootstrap interval over the subject's test images")
    flat = lambda text: " ".join(text.split())  # noqa: E731 - captions are wrapped
    assert "error bars: 95% bootstrap interval over the subject's test images" in flat(fig.axes[0].get_title())
    plt.close(fig)
    t = np.round(np.arange(0.02, 0.5, 0.02), 3)  # window centres start after the onset: no onset line
    fig = viz.plot_time_resolved(t, np.full(t.size, 0.1), ci_low=np.full(t.size, 0.05), ci_high=np.full(t.size, 0.15),
                                 significant=t > 0.2, band_label="95% bootstrap interval per window, uncorrected",
                                 significance_label="cluster-based permutation test, p < 0.05")
    ax = fig.axes[0]
    legend = [tx.get_text() for lg in fig.legends for tx in lg.get_texts()]
    assert legend and "stimulus onset" not in legend and "stimulus onset" not in [ln.get_label() for ln in ax.get_lines()]
    assert "shaded: 95% bootstrap interval per window, uncorrected" in flat(ax.get_title())
    assert "bars below: cluster-based permutation test, p < 0.05" in flat(ax.get_title())
    plt.close(fig)
    img = np.zeros((8, 8, 3), np.uint8)
    fig = viz.plot_retrieval_strip([img] * 3, [[img, img]] * 3, np.zeros((3, 2), bool), n_total=50, n_candidates=50)
    assert "Rows shown: 3 of 50 test images" in flat(_all_text(fig))
    plt.close(fig)
