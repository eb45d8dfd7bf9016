"""Fine-tune mode: schedule, head-first freezing, exact resume after SIGKILL, 2-process DDP, big models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _trainutil import make_image_folder
from birdlens.train import TrainConfig, load_trained, train
from birdlens.train.module import warmup_cosine

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny") / "birds")


def _cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "data": str(data),
        "out": str(out),
        "model": "simple_cnn",
        "mode": "finetune",
        "image_size": 32,
        "epochs": 2,
        "batch_size": 4,
        "quiet": True,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_warmup_cosine_schedule() -> None:
    assert warmup_cosine(0, 0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(3, 0, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(4, 0, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(12, 0, 4, 20) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine(20, 0, 4, 20) == pytest.approx(0.0)
    assert warmup_cosine(5, 6, 2, 20) == 0.0  # backbone before unfreezing


def test_finetune_defaults_pretrained_vs_scratch(tmp_path: Path) -> None:
    """Pretrained fine-tuning defaults to gentle LP-FT with frozen BatchNorm; from scratch keeps the plain recipe."""
    from birdlens.train.config import resolve

    pre = resolve(TrainConfig(data="d", out=str(tmp_path), model="efficientnet_lite0", mode="finetune"), 224)
    assert (
        pre.head_init,
        pre.freeze_bn,
        pre.head_epochs,
        pre.lr,
        pre.backbone_lr_ratio,
        pre.label_smoothing,
    ) == ("probe", True, 0, 1e-4, 0.2, 0.0)
    rnd = resolve(
        TrainConfig(
            data="d", out=str(tmp_path), model="efficientnet_lite0", mode="finetune", head_init="random"
        ),
        224,
    )
    assert (rnd.head_epochs, rnd.lr, rnd.backbone_lr_ratio, rnd.freeze_bn) == (1, 1e-3, 0.1, True)
    scratch = resolve(TrainConfig(data="d", out=str(tmp_path), model="simple_cnn", mode="finetune"), 128)
    assert (
        scratch.head_init,
        scratch.freeze_bn,
        scratch.head_epochs,
        scratch.lr,
        scratch.backbone_lr_ratio,
    ) == ("random", False, 0, 1e-3, 1.0)
    probe = resolve(TrainConfig(data="d", out=str(tmp_path), model="efficientnet_lite0"), 224)
    assert probe.head_init == "random" and probe.freeze_bn is False


def test_freeze_bn_keeps_every_batchnorm_in_eval_mode(tmp_path: Path) -> None:
    from birdlens.models import create_model
    from birdlens.train.config import resolve
    from birdlens.train.module import Classifier

    model = create_model("efficientnet_lite0", num_classes=3, pretrained=False)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for freeze in (True, False):
        cfg = resolve(
            TrainConfig(
                data="d",
                out=str(tmp_path),
                model="efficientnet_lite0",
                mode="finetune",
                freeze_bn=freeze,
                head_epochs=0,
            ),
            224,
        )
        module = Classifier(model, cfg, n_train=8)
        module._apply_freeze()
        assert model.training and all(m.training != freeze for m in bns)
        assert all(p.requires_grad for m in bns for p in m.parameters())  # affine still trains


def test_head_first_then_unfreeze_with_local_weights(tiny_data: Path, tmp_path: Path) -> None:
    """With a pretrained (here: a local weights file) backbone, epoch 1 trains only the head."""
    from birdlens.models import create_model
    from birdlens.runs.trained import save_weights

    weights = tmp_path / "start.safetensors"
    start = create_model("simple_cnn", num_classes=3, pretrained=False)
    save_weights(start, weights)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    from lightning.pytorch.callbacks import Callback

    class Snapshot(Callback):
        def on_train_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
            seen[trainer.current_epoch] = {
                k: v.detach().clone() for k, v in pl_module.model.state_dict().items()
            }

    run = train(
        _cfg(
            tiny_data,
            tmp_path / "run",
            weights=str(weights),
            head_epochs=1,
            epochs=2,
            patience=None,
            head_init="random",
        ),
        evaluate=False,
        callbacks=[Snapshot()],
    )
    init = load_file(str(weights))
    conv = "features.0.conv.weight"
    assert torch.equal(seen[0][conv], init[conv]), "backbone moved while frozen"
    assert not torch.equal(seen[0]["head.fc.weight"], init["head.fc.weight"]), "head did not train"
    assert not torch.equal(seen[1][conv], seen[0][conv]), "backbone did not train after unfreezing"
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[1].split(",")[1] == "head" and rows[2].split(",")[1] == "finetune"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["weights"].startswith("file:") and meta["epochs_run"] == 2


_SCRIPT = """
import os, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["BIRDLENS_QUIET"] = "1"
import torch
torch.set_num_threads(1)
from lightning.pytorch.callbacks import Callback
from birdlens.train import TrainConfig, train

class Slow(Callback):
    def __init__(self, delay):
        self.delay = delay
    def on_train_batch_end(self, *args):
        time.sleep(self.delay)

data, out, how, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
cfg = TrainConfig(data=data, out=out, model="simple_cnn", mode="finetune", image_size=32, epochs=3,
                  batch_size=4, augment="light", checkpoint_every_n_steps=2, patience=None, quiet=True,
                  devices=int(os.environ.get("T_DEVICES", "1")), strategy=os.environ.get("T_STRATEGY", "auto"),
                  accelerator="cpu")
extra = []
if os.environ.get("T_RECORD"):
    class Record(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            keys = getattr(self, "keys", [])
            keys.append([float(v) for v in batch[0].flatten(1).sum(1)])
            self.keys = keys
        def on_train_end(self, trainer, pl_module):
            import json
            sd = {k: v.detach().cpu().contiguous() for k, v in pl_module.model.state_dict().items()}
            from safetensors.torch import save_file
            save_file(sd, os.path.join(os.environ["T_RECORD"], f"rank{trainer.global_rank}.safetensors"))
            with open(os.path.join(os.environ["T_RECORD"], f"rank{trainer.global_rank}.json"), "w") as f:
                json.dump({"batches": self.keys, "world": trainer.world_size}, f)
    extra.append(Record())
train(cfg, resume=how == "resume", evaluate=False, callbacks=[Slow(delay), *extra])
"""


def _run_script(
    tmp_path: Path, args: list[str], env: dict[str, str] | None = None, **kw: object
) -> subprocess.Popen:
    script = tmp_path / "run_train.py"
    script.write_text(_SCRIPT)
    e = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(script), *args], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw
    )  # type: ignore[call-overload]


def _wait(p: subprocess.Popen, timeout: float = 240) -> None:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out.decode(errors="replace")[-3000:]


def test_resume_before_the_first_checkpoint_trains_what_a_fresh_run_trains(
    tiny_data: Path, tmp_path: Path
) -> None:
    """Issue 26: a fine-tune stopped before its first ``last.ckpt`` and resumed used to start again without
    its probe-initialised head (a worse model, no warning); it must end where an uninterrupted run ends."""
    from lightning.pytorch.callbacks import Callback

    class StopAtFirstBatch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
            raise RuntimeError("stopped before the first checkpoint")

    settings = {"head_init": "probe", "epochs": 1, "patience": None, "accelerator": "cpu"}
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(_cfg(tiny_data, straight, **settings), evaluate=False)
    with pytest.raises(RuntimeError, match="before the first checkpoint"):
        train(_cfg(tiny_data, stopped, **settings), evaluate=False, callbacks=[StopAtFirstBatch()])
    assert (stopped / "config.yaml").is_file() and not (stopped / "last.ckpt").exists()

    train(_cfg(tiny_data, stopped, **settings), resume=True, evaluate=False)
    assert "probe_init" in json.loads((stopped / "meta.json").read_text())
    assert _same_weights(straight / "last.safetensors", stopped / "last.safetensors")
    assert _same_weights(straight / "best.safetensors", stopped / "best.safetensors")


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tiny_data: Path, tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # the uninterrupted reference runs in this process (same settings as the script: 1 thread, CPU)
    train(
        TrainConfig(
            data=str(tiny_data),
            out=str(straight),
            model="simple_cnn",
            mode="finetune",
            image_size=32,
            epochs=3,
            batch_size=4,
            augment="light",
            checkpoint_every_n_steps=2,
            patience=None,
            quiet=True,
            accelerator="cpu",
        ),
        evaluate=False,
    )

    p = _run_script(tmp_path, [str(tiny_data), str(killed), "new", "0.4"])
    deadline = time.time() + 180
    while not (killed / "last.ckpt").exists():
        assert p.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    ckpt = torch.load(killed / "last.ckpt", weights_only=True)
    steps_per_epoch = 6  # 24 images / batch 4
    assert 0 < ckpt["global_step"] < 3 * steps_per_epoch
    assert ckpt["global_step"] % steps_per_epoch != 0, "the kill should land mid-epoch"
    assert not (killed / "last.safetensors").exists()

    _wait(_run_script(tmp_path, [str(tiny_data), str(killed), "resume", "0"]))
    assert _same_weights(straight / "last.safetensors", killed / "last.safetensors")
    assert _same_weights(straight / "best.safetensors", killed / "best.safetensors")
    meta = json.loads((killed / "meta.json").read_text())
    assert meta["global_step"] == 3 * steps_per_epoch and meta["epochs_run"] == 3
    assert len((killed / "log.csv").read_text().splitlines()) == 1 + 3


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_one_model(tiny_data: Path, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    _wait(
        _run_script(
            tmp_path,
            [str(tiny_data), str(tmp_path / "ddp"), "new", "0"],
            env={"T_DEVICES": "2", "T_STRATEGY": "ddp", "T_RECORD": str(rec)},
        )
    )
    r0, r1 = (json.loads((rec / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    # each rank saw half of every epoch's 24 images, and together all of them (no image on both ranks)
    steps = 3  # ceil(12 / 4) per rank per epoch
    for epoch in range(3):
        a = [k for b in r0["batches"][epoch * steps : (epoch + 1) * steps] for k in b]
        b = [k for b in r1["batches"][epoch * steps : (epoch + 1) * steps] for k in b]
        assert len(a) == len(b) == 12
        assert not set(a) & set(b)
    # gradients were averaged: both ranks end with the same weights, which rank 0 saved
    assert _same_weights(rec / "rank0.safetensors", rec / "rank1.safetensors")
    assert _same_weights(rec / "rank0.safetensors", tmp_path / "ddp" / "last.safetensors")
    meta = json.loads((tmp_path / "ddp" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["steps_per_epoch"] == steps


@pytest.mark.parametrize(("name", "size"), [("vgg19", 32), ("xception", 71)])
def test_big_models_train_one_step_and_evaluate_offline(
    name: str, size: int, tiny_data: Path, tmp_path: Path
) -> None:
    """VGG19 / Xception: random weights (no network), one optimiser step, evaluation; Xception also restarts
    from its saved weights as a local ``--weights`` file (VGG19's 0.5 GB file would only cost time)."""
    run = train(
        _cfg(
            tiny_data,
            tmp_path / "run",
            model=name,
            pretrained=False,
            image_size=size,
            epochs=1,
            batch_size=2,
            limit_train_batches=1,
            limit_val_batches=1,
            patience=None,
        )
    )
    meta = json.loads((run / "meta.json").read_text())
    assert meta["global_step"] == 1 and meta["image_size"] == size
    assert json.loads((run / "metrics/test.json").read_text())["n"] == 6
    trained = load_trained(run)
    assert trained.model_name == name and len(trained.classes) == 3
    if name == "vgg19":
        return
    # the saved weights work as a local --weights file for a new run
    run2 = train(
        _cfg(
            tiny_data,
            tmp_path / "run2",
            model=name,
            weights=str(run / "best.safetensors"),
            image_size=size,
            epochs=1,
            batch_size=2,
            limit_train_batches=1,
            limit_val_batches=1,
            head_epochs=1,
            head_init="random",
            patience=None,
        ),
        evaluate=False,
    )
    assert json.loads((run2 / "meta.json").read_text())["weights"].startswith("file:")
