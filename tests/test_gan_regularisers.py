"""LeCam and mode seeking: hand-computed values, the paired labels they need, and an exact resume with both on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _data_helpers import tiny_image_set
from birdlens.augment.gan.checkpoint import save_checkpoint
from birdlens.augment.gan.config import GANConfig
from birdlens.augment.gan.losses import LeCam, mode_seeking
from birdlens.augment.gan.train import init_state, state_from_checkpoint, state_to_checkpoint, train_step


def test_lecam_matches_hand_computed_values_and_gradients() -> None:
    reg = LeCam(decay=0.5)
    real = torch.tensor([1.0, 3.0], requires_grad=True)
    fake = torch.tensor([-2.0, 0.0], requires_grad=True)
    # first batch sets the anchors: a_real = 2, a_fake = -1
    # R = mean(relu([1, 3] + 1)^2) + mean(relu(2 - [-2, 0])^2) = mean(4, 16) + mean(16, 4) = 20
    r = reg(real, fake)
    assert r.item() == pytest.approx(20.0)
    assert reg.state_dict() == {"anchor_real": 2.0, "anchor_fake": -1.0}
    r.backward()
    # d/d real_i of mean((real_i + 1)^2) = (real_i + 1); d/d fake_i of mean((2 - fake_i)^2) = -(2 - fake_i)
    assert torch.allclose(real.grad, torch.tensor([2.0, 4.0]))
    assert torch.allclose(fake.grad, torch.tensor([-4.0, -2.0]))
    # second batch of zeros, decay 0.5: a_real = 1, a_fake = -0.5 -> R = 0.5^2 + 1^2 = 1.25
    r2 = reg(torch.zeros(2), torch.zeros(2))
    assert r2.item() == pytest.approx(1.25)
    # a discriminator whose real and fake logits sit on the other side of the anchors costs nothing
    assert LeCam()(torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0])).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="decay"):
        LeCam(decay=1.0)


def test_mode_seeking_is_the_inverse_image_to_noise_distance_ratio() -> None:
    z = torch.cat([torch.zeros(2, 4), torch.full((2, 4), 2.0)])  # |z1 - z2| = 2 everywhere
    fake = torch.cat([torch.zeros(2, 3, 2, 2), torch.full((2, 3, 2, 2), 0.5)])  # |x1 - x2| = 0.5
    assert mode_seeking(fake, z).item() == pytest.approx(1.0 / (0.25 + 1e-5))
    # identical images for different noises (collapse) cost far more than distinct ones
    assert mode_seeking(torch.zeros(4, 3, 2, 2), z).item() == pytest.approx(1e5)
    with pytest.raises(ValueError, match="even"):
        mode_seeking(torch.zeros(3, 3, 2, 2), torch.zeros(3, 4))


def test_mode_seeking_draws_fake_labels_in_pairs_and_needs_an_even_batch() -> None:
    data = tiny_image_set()
    cfg = GANConfig(arch="cgan", image_size=16, batch_size=6, g_width=4, d_width=4, seed=1, ms_weight=1.0)
    st = init_state(cfg, data.classes)
    seen: list[torch.Tensor] = []
    handle = st.G.register_forward_pre_hook(lambda _m, args: seen.append(args[1].clone()))
    try:
        out = train_step(st, data)
    finally:
        handle.remove()
    assert len(seen) == st.cfg.n_dis == 2  # one fake batch per discriminator step
    for y in seen:
        assert torch.equal(y[:3], y[3:])
    assert out["ms"] > 0
    with pytest.raises(ValueError, match="even batch"):
        init_state(
            GANConfig(arch="cgan", image_size=16, batch_size=5, g_width=4, d_width=4, ms_weight=1.0),
            data.classes,
        )


def test_lecam_and_mode_seeking_change_training_and_survive_a_resume(tmp_path: Path) -> None:
    data = tiny_image_set()
    base = dict(arch="cgan", image_size=16, batch_size=4, g_width=4, d_width=4, seed=3)
    cfg = GANConfig(**base, lecam_weight=0.3, ms_weight=1.0)

    straight = init_state(cfg, data.classes)
    for _ in range(4):
        out = train_step(straight, data)
    assert out["lecam"] >= 0 and "ms" in out
    split = init_state(cfg, data.classes)
    for _ in range(2):
        train_step(split, data)
    save_checkpoint(tmp_path / "c.safetensors", *state_to_checkpoint(split))
    split = state_from_checkpoint(tmp_path / "c.safetensors")
    assert split.lecam is not None and split.lecam.anchor_real is not None
    for _ in range(2):
        train_step(split, data)
    assert straight.lecam is not None and split.lecam.state_dict() == straight.lecam.state_dict()
    for k, v in straight.D.state_dict().items():
        assert torch.equal(v, split.D.state_dict()[k]), k
    for k, v in straight.G.state_dict().items():
        assert torch.equal(v, split.G.state_dict()[k]), k
    # off when 0 (the cgan's default LeCam is 0.3, the dcgan's 0), and on they change what is learned
    assert init_state(GANConfig(**base), data.classes).lecam is not None
    assert init_state(GANConfig(**{**base, "arch": "dcgan"}), data.classes).lecam is None
    plain = init_state(GANConfig(**base, lecam_weight=0.0), data.classes)
    assert plain.lecam is None
    for _ in range(4):
        train_step(plain, data)
    assert any(
        not torch.equal(v, plain.G.state_dict()[k])
        for k, v in straight.G.state_dict().items()
        if v.is_floating_point()
    )


def test_joint_discriminator_pass_halves_the_d_calls_and_refuses_batch_norm() -> None:
    data = tiny_image_set()
    calls = {}
    for joint in (False, True):
        cfg = GANConfig(arch="cgan", image_size=16, batch_size=4, g_width=4, d_width=4, seed=1, joint_d=joint)
        st = init_state(cfg, data.classes)
        sizes: list[int] = []
        handle = st.D.register_forward_pre_hook(lambda _m, args, s=sizes: s.append(args[0].shape[0]))
        try:
            out = train_step(st, data)
        finally:
            handle.remove()
        calls[joint] = sizes
        assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert calls[False] == [4, 4, 4, 4, 4]  # (real, fake) x 2 D updates, then the G step
    assert calls[True] == [8, 8, 4]
    with pytest.raises(ValueError, match="batch norm"):
        init_state(
            GANConfig(arch="dcgan", image_size=16, batch_size=4, g_width=4, d_width=4, joint_d=True),
            data.classes,
        )


def test_a_run_saved_before_a_default_changed_resumes_with_what_it_trained_with(tmp_path: Path) -> None:
    """The cgan's LeCam (0.3) and EMA ramp-up (0.05) became defaults after runs were kept without the keys."""
    from birdlens.augment.gan.checkpoint import load_meta

    data = tiny_image_set()
    cfg = GANConfig(arch="cgan", image_size=16, batch_size=4, g_width=4, d_width=4, seed=3)
    assert (cfg.resolved().lecam_weight, cfg.resolved().ema_rampup) == (0.3, 0.05)
    state = init_state(cfg, data.classes)
    train_step(state, data)
    tensors, meta = state_to_checkpoint(state)
    for key in ("lecam_weight", "ema_rampup"):
        del meta["config"][key]
    meta.pop("lecam", None)
    save_checkpoint(tmp_path / "old.safetensors", tensors, meta)
    old = state_from_checkpoint(tmp_path / "old.safetensors")
    assert old.lecam is None and (old.cfg.lecam_weight, old.cfg.ema_rampup) == (0.0, 0.0)
    assert "lecam_weight" not in load_meta(tmp_path / "old.safetensors")["config"]
