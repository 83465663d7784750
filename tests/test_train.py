"""Training loop: config loading, schedule, a step lowers the loss, determinism, resume, 2-process DDP."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prolab.errors import ProLabError
from prolab.labelspace import LabelSpace
from prolab.model import PropertySegmenter, SegmenterConfig
from prolab.scoring import anchor_loss
from prolab.train import LossTargets, TrainConfig, compute_loss, load_config, lr_factor, train

REPO = Path(__file__).resolve().parents[1]
D, K, C, S = 16, 6, 3, 32


def tiny_space() -> LabelSpace:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(K, D)).astype(np.float32)
    matrix = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], np.float32)
    sentences = [f"s{i}" for i in range(K)]
    emb = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    return LabelSpace(class_names=["a", "b", "c"], sentences=sentences,
                      sentence_class=np.array([0, 0, 1, 1, 2, 2]), sentence_embeddings=emb,
                      sentence_property=np.arange(K), centers=centers, class_matrix=matrix,
                      property_names=sentences, encoder_id="tiny", template="plain", k=K, seed=0)


def tiny_model(supervision: str = "property", seed: int = 0) -> PropertySegmenter:
    torch.manual_seed(seed)
    common = dict(backbone_options={"width": 0.25}, decoder_channels=8, input_size=64)
    if supervision == "property":
        return PropertySegmenter(SegmenterConfig(embed_dim=D, **common), label_space=tiny_space())
    return PropertySegmenter(SegmenterConfig(supervision="category", num_classes=C, **common))


class Synthetic(torch.utils.data.Dataset):
    """Left half class 0, right half class 1 (bright) or 2 (dark), a few ignored pixels."""

    def __init__(self, n: int = 4):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            img = torch.rand((3, S, S), generator=g) * 0.2
            lab = torch.zeros((S, S), dtype=torch.int64)
            lab[:, S // 2:] = 1 if i % 2 else 2
            img[:, :, S // 2:] += 0.7 if i % 2 else 0.1
            img[1, :, : S // 2] += 0.5
            lab[:2] = 255
            self.items.append((img.clamp(0, 1), lab))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def set_epoch(self, epoch):
        pass


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path / "run"), steps=2, batch_size=2, lr=2e-3, warmup_steps=0,
                checkpoint_every=100, log_every=1, progress=False, crop_size=S, seed=0)
    base.update(kw)
    return TrainConfig.from_dict(base)


def _batch_loss(model, ds) -> float:
    images = torch.stack([x for x, _ in ds.items])
    labels = torch.stack([y for _, y in ds.items])
    model.train()
    torch.manual_seed(123)  # same dropout mask before and after
    with torch.no_grad():
        out = model(model.normalize(images), return_aux=True)
        return float(compute_loss(out, labels, LossTargets(model, torch.device("cpu")), 0.4))


@pytest.mark.parametrize("supervision", ["property", "category"])
def test_training_step_lowers_loss(tmp_path, supervision):
    model, ds = tiny_model(supervision), Synthetic(2)
    before = _batch_loss(model, ds)
    train(_cfg(tmp_path, steps=1, supervision=supervision, lr=5e-3), model=model, dataset=ds)
    after = _batch_loss(model, ds)
    assert after < before
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 1 and lines[-1]["loss"] > 0
    reloaded = PropertySegmenter.from_pretrained(tmp_path / "run")
    assert reloaded.config.supervision == supervision


def test_class_balance_reweights_category_loss():
    model = tiny_model("category")
    torch.manual_seed(0)
    logits = torch.randn(1, model.config.num_classes, 4, 4)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 0, 0] = 1
    labels[0, 3, 3] = 255
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")[labels != 255]
    valid = labels[labels != 255]
    plain = compute_loss({"out": logits}, labels, LossTargets(model, torch.device("cpu")))
    assert plain.item() == pytest.approx(float(per_pixel.mean()), rel=1e-6)
    w = torch.where(valid == 1, 1.0, 1 / 14 ** 0.5)  # 14 pixels of class 0, one of class 1
    balanced = compute_loss({"out": logits}, labels, LossTargets(model, torch.device("cpu"), 0.5))
    assert balanced.item() == pytest.approx(float((per_pixel * w / w.mean()).mean()), rel=1e-5)
    with pytest.raises(ProLabError, match="class_balance"):
        TrainConfig.from_dict({"class_balance": -1})


@pytest.mark.parametrize("supervision", ["property", "category"])
def test_input_resolution_loss_sees_one_pixel_structures(supervision):
    """A 1-pixel-wide class column vanishes when labels are nearest-sampled to stride 4, but not
    when the head's output is upsampled to the labels."""
    model = tiny_model(supervision)
    targets = LossTargets(model, torch.device("cpu"))
    ch = D if supervision == "property" else C
    out = torch.randn(1, ch, 4, 4, requires_grad=True)
    labels = torch.full((1, 16, 16), 255, dtype=torch.long)
    labels[0, :, 5] = 1  # column 5: never picked by nearest sampling (it takes columns 0, 4, 8, 12)
    low = compute_loss({"out": out}, labels, targets, resolution="output")
    assert low.item() == 0.0  # nothing labelled survives the downsampling
    full = compute_loss({"out": out}, labels, targets, resolution="input")
    full.backward()
    assert full.item() > 0 and out.grad.abs().sum() > 0
    up = torch.nn.functional.interpolate(out.detach(), size=(16, 16), mode="bilinear", align_corners=False)
    assert full.item() == pytest.approx(compute_loss({"out": up}, labels, targets).item(), rel=1e-6)
    with pytest.raises(ProLabError, match="loss_resolution"):
        TrainConfig.from_dict({"loss_resolution": "full"})
    points = compute_loss({"out": out.detach()}, labels, LossTargets(model, torch.device("cpu"), points=4096),
                          resolution="points")
    assert points.item() == pytest.approx(full.item(), rel=0.05)  # points on the column, not on its grid


def test_points_loss_config_and_training_step(tmp_path):
    with pytest.raises(ProLabError, match="class_ce_weight needs loss_resolution: points"):
        TrainConfig.from_dict({"class_ce_weight": 0.5})
    with pytest.raises(ProLabError, match="loss_points"):
        TrainConfig.from_dict({"loss_resolution": "points", "loss_points": 0})
    model, ds = tiny_model(), Synthetic(2)
    before = _batch_loss(model, ds)
    train(_cfg(tmp_path, steps=1, lr=5e-3, loss_resolution="points", loss_points=512, class_ce_weight=0.5,
               class_ce_present=True),
          model=model, dataset=ds)
    assert _batch_loss(model, ds) < before


def test_train_uses_class_balance(tmp_path):
    losses = {}
    for power in (0.0, 1.0):
        run = tmp_path / f"cb{power}"
        train(_cfg(tmp_path, out_dir=str(run), steps=1, class_balance=power), model=tiny_model(), dataset=Synthetic(2))
        losses[power] = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    # Same model, batch and seed: only the pixel weights differ (class 0 covers half of each image).
    assert losses[1.0] != pytest.approx(losses[0.0], rel=1e-3)


def test_same_seed_same_weights(tmp_path):
    states = []
    for run in ("a", "b"):
        model = tiny_model()
        train(_cfg(tmp_path, out_dir=str(tmp_path / run), steps=3), model=model, dataset=Synthetic())
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_resume_matches_uninterrupted_run(tmp_path):
    full = tiny_model()
    train(_cfg(tmp_path, out_dir=str(tmp_path / "full"), steps=4), model=full, dataset=Synthetic())
    part = tiny_model()
    train(_cfg(tmp_path, out_dir=str(tmp_path / "part"), steps=4, stop_after=2), model=part,
          dataset=Synthetic())
    ckpt = tmp_path / "part" / "checkpoint"
    assert (ckpt / "trainer_state.pt").is_file() and (ckpt / "model.safetensors").is_file()
    first = float(torch.load(ckpt / "trainer_state.pt", weights_only=True)["seconds"])  # the first chunk's
    assert first > 0
    # Other learning-rate groups or multipliers than the checkpoint's are refused, not silently replaced by
    # the saved ones (torch's load_state_dict keeps the saved groups' settings).
    everything = {"decode_head.": 2.0, "backbone.": 2.0, "aux_head.": 2.0}  # same two groups, other multiplier
    for mults, match in (({"decode_head.classifier.": 3.0}, "other learning-rate groups"),
                         (everything, "other learning-rate multipliers")):
        with pytest.raises(ProLabError, match=match):
            train(_cfg(tmp_path, out_dir=str(tmp_path / "part"), steps=4, resume=True, lr_mults=mults),
                  model=tiny_model(), dataset=Synthetic())
    log = tmp_path / "part" / "metrics.jsonl"  # a kill after step 3's log line, before its checkpoint
    log.write_text(log.read_text() + json.dumps({"step": 3, "loss": 9.0}) + "\n" + '{"step": 4, "lo')
    resumed = tiny_model(seed=99)  # different init: everything must come from the checkpoint
    train(_cfg(tmp_path, out_dir=str(tmp_path / "part"), steps=4, resume=True), model=resumed,
          dataset=Synthetic())
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the killed run's step-3 line and its cut-off line are gone
    assert 9.0 not in [json.loads(x)["loss"] for x in log.read_text().splitlines()]
    # The time of both chunks: the summary and the log count the first chunk's seconds too.
    summary = json.loads((tmp_path / "part" / "train_summary.json").read_text())
    assert summary["seconds"] == pytest.approx(first + summary["last_chunk_seconds"], abs=0.2)
    assert summary["seconds"] >= round(first, 1)
    elapsed = [json.loads(x)["elapsed_s"] for x in log.read_text().splitlines()]
    assert elapsed == sorted(elapsed) and elapsed[2] >= round(first, 2) - 0.01  # step 3: the resumed chunk's first
    train(_cfg(tmp_path, out_dir=str(tmp_path / "part"), steps=2), model=tiny_model(), dataset=Synthetic())
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2]  # a fresh run, a fresh log
    old = (tmp_path / "part" / "metrics.jsonl.prev").read_text().splitlines()  # the old one kept aside
    assert [json.loads(x)["step"] for x in old] == [1, 2, 3, 4]


def test_trim_metrics_keeps_what_the_checkpoint_covers(tmp_path):
    """Lines after the checkpoint and a cut-off last line go; lines without a numeric step stay."""
    from prolab.train import _trim_metrics

    log = tmp_path / "metrics.jsonl"
    lines = [{"step": 10}, {"note": "no step"}, {"step": None}, {"step": 20}, {"step": 30}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 40, "lo')
    _trim_metrics(log, 20)
    assert [json.loads(x) for x in log.read_text().splitlines()] == lines[:4]


def test_lr_schedule_warmup_then_poly():
    cfg = TrainConfig(steps=100, warmup_steps=10, poly_power=1.0)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.5)
    assert lr_factor(100, cfg) == 0.0


def test_config_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 10\nmodel:\n  decoder_channels: 32\nsources: [camvid]\n")
    cfg = load_config(p, ["lr=0.01", "model.aux_head=false", "sources=[msrc_v2, camvid]"], steps=None, seed=3)
    assert cfg.steps == 10 and cfg.lr == 0.01 and cfg.seed == 3
    assert cfg.model == {"decoder_channels": 32, "aux_head": False}
    assert cfg.sources == ["msrc_v2", "camvid"]
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"batch_size": 3}))
    assert load_config(j).batch_size == 3
    with pytest.raises(ProLabError, match="Unknown training config keys: bogus"):
        load_config(None, ["bogus=1"])
    with pytest.raises(ProLabError, match="key=value"):
        load_config(None, ["steps"])
    with pytest.raises(ProLabError, match="multiple of 32"):
        load_config(None, ["crop_size=100"])
    with pytest.raises(ProLabError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def _write_folder_dataset(root: Path, n: int = 4) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("left\nright\n")
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        mask = np.zeros((40, 48), np.uint8)
        mask[:, 24:] = 1
        Image.fromarray(img).save(root / "images" / f"i{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"i{i}.png")


def test_torchrun_two_process_gloo(tmp_path):
    """The same CLI under torchrun with 2 CPU processes (gloo) trains and saves one model."""
    data = tmp_path / "data"
    _write_folder_dataset(data)
    cfg = {"out_dir": str(tmp_path / "ddp"), "sources": [{"type": "folder", "path": str(data)}],
           "label_space": "classes", "supervision": "category", "steps": 3, "batch_size": 2,
           "short_side": 40, "crop_size": 64, "warmup_steps": 0, "checkpoint_every": 2,
           "log_every": 1, "threads": 1, "progress": False,
           "model": {"backbone_options": {"width": 0.25}, "decoder_channels": 8}}
    (tmp_path / "ddp.json").write_text(json.dumps(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                           "--nproc_per_node", "2", "-m", "prolab", "train", "--config", str(tmp_path / "ddp.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    model = PropertySegmenter.from_pretrained(tmp_path / "ddp")
    assert model.class_names == ["left", "right"]
    assert (tmp_path / "ddp" / "checkpoint" / "trainer_state.pt").is_file()


def test_shipped_configs_load_and_each_baseline_has_its_property_recipe():
    """Every config under configs/ loads and validates, and each category baseline differs from the
    property config of the same stage only in supervision and folders (the identical-recipe claim)."""
    root = Path(__file__).resolve().parents[1] / "configs"
    configs = {p.relative_to(root).as_posix(): load_config(p).to_dict() for p in sorted(root.rglob("*.yaml"))}
    pairs = [(k, k.replace("default_property", "baseline_category")) for k in configs if "default_property" in k]
    assert len(pairs) >= 4
    for prop, cat in pairs:
        a, b = configs[prop], configs[cat]
        assert {k for k in a if a[k] != b.get(k)} <= {"supervision", "out_dir", "init_from"}, prop
        assert (a["supervision"], b["supervision"]) == ("property", "category")


def test_a_fine_tune_keeps_its_starting_models_inference_size_unless_told(tmp_path):
    """Training at short side 352 from a model whose size was chosen on val (416) must not score it at 352."""
    from prolab.train import load_initial_model

    model = tiny_model("property")
    model.config.input_size = 416
    model.save_pretrained(tmp_path / "init")
    kept = load_initial_model(TrainConfig(init_from=str(tmp_path / "init"), short_side=352), model.label_space)
    assert kept.config.input_size == 416
    told = load_initial_model(TrainConfig(init_from=str(tmp_path / "init"), short_side=352, input_size=480),
                              model.label_space)
    assert told.config.input_size == 480
    with pytest.raises(ProLabError, match="input_size must be a multiple of 32"):
        TrainConfig(input_size=400).validate()


def _drift(model, start, ds) -> float:
    """Mean 1 - cos of the property activations of ``model`` against ``start`` on the synthetic images."""
    images = model.normalize(torch.stack([x for x, _ in ds.items]))
    with torch.no_grad():
        a, b = model.eval()(images)["out"], start.eval()(images)["out"]
    return float(anchor_loss(a, b, torch.as_tensor(start.label_space.centers, dtype=torch.float32)))


def test_anchor_loss_keeps_the_activations_near_the_starting_model(tmp_path):
    with pytest.raises(ProLabError, match="anchor_weight must be >= 0 and needs property supervision"):
        TrainConfig.from_dict({"anchor_weight": 0.5, "supervision": "category"})
    start = tiny_model()
    centers = torch.as_tensor(start.label_space.centers, dtype=torch.float32)
    e = torch.randn(2, D, 5, 6, requires_grad=True)
    assert float(anchor_loss(e, e.detach(), centers).detach()) == pytest.approx(0.0, abs=1e-6)
    far = anchor_loss(e, torch.randn(2, D, 5, 6), centers)
    far.backward()
    assert float(far.detach()) > 0.01 and e.grad.abs().sum() > 0
    drift = {}
    for weight in (0.0, 20.0):
        model = copy.deepcopy(start)
        train(_cfg(tmp_path, out_dir=str(tmp_path / f"w{weight}"), steps=8, lr=2e-2, anchor_weight=weight),
              model=model, dataset=Synthetic(2))
        drift[weight] = _drift(model, start, Synthetic(2))
    assert drift[0.0] > 0 and drift[20.0] < 0.7 * drift[0.0], drift


def test_the_anchor_starts_at_zero_and_is_logged(tmp_path):
    """At step 1 the trained model and its reference have the same weights: the term is dropout noise only. A
    reference in eval mode would differ by the batch-norm regime alone (running vs the batch's statistics)."""
    model = tiny_model()
    eval_copy = copy.deepcopy(model).eval()
    train(_cfg(tmp_path, steps=2, anchor_weight=1.0, log_every=1), model=model, dataset=Synthetic(2))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["anchor"] < 0.005 and lines[1]["anchor"] > 0  # measured 0.0011; an eval-mode reference 0.0137
    images = model.normalize(torch.stack([x for x, _ in Synthetic(2).items]))
    centers = torch.as_tensor(model.label_space.centers, dtype=torch.float32)
    start = copy.deepcopy(eval_copy)
    with torch.no_grad():  # the regime gap an eval-mode reference would have anchored to, same weights
        gap = float(anchor_loss(start.train()(images)["out"], eval_copy(images)["out"], centers))
    assert gap > 5 * lines[0]["anchor"], (gap, lines[0]["anchor"])
    with pytest.raises(ProLabError, match="set init_from"):
        train(_cfg(tmp_path, out_dir=str(tmp_path / "fresh"), anchor_weight=1.0), dataset=Synthetic(2))


def test_anchored_run_resumes_exactly_from_init_from(tmp_path):
    """The anchor is the init_from model on a resume too, not the checkpoint's weights."""
    tiny_model().save_pretrained(tmp_path / "init")
    kw = dict(init_from=str(tmp_path / "init"), steps=4, lr=1e-2, anchor_weight=1.0)
    full = train(_cfg(tmp_path, out_dir=str(tmp_path / "full"), **kw), dataset=Synthetic())
    train(_cfg(tmp_path, out_dir=str(tmp_path / "part"), stop_after=2, **kw), dataset=Synthetic())
    part = train(_cfg(tmp_path, out_dir=str(tmp_path / "part"), resume=True, **kw), dataset=Synthetic())
    a = PropertySegmenter.from_pretrained(full).state_dict()
    b = PropertySegmenter.from_pretrained(part).state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
