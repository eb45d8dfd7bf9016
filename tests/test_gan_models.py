"""GAN networks and DiffAugment: shapes, conditioning, spectral norm, differentiability, both branches."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from _data_helpers import tiny_image_set
from birdlens.augment.gan.cgan import NoiseInjection, ProjectionDiscriminator, ResGenerator, noise_source
from birdlens.augment.gan.config import GANConfig
from birdlens.augment.gan.dcgan import DCGANDiscriminator, DCGANGenerator
from birdlens.augment.gan.diffaug import diff_augment, rand_cutout, rand_translation
from birdlens.augment.gan.models import build_discriminator, build_generator
from birdlens.augment.gan.train import generate, init_state, train_step


@pytest.mark.parametrize("arch", ["cgan", "dcgan"])
@pytest.mark.parametrize("size", [16, 32])
def test_shapes(arch: str, size: int) -> None:
    cfg = GANConfig(arch=arch, image_size=size, g_width=4, d_width=4)
    G, D = build_generator(cfg, 5), build_discriminator(cfg, 5)
    z = torch.randn(3, cfg.resolved().z_dim)
    y = torch.tensor([0, 2, 4])
    x = G(z, y)
    assert x.shape == (3, 3, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x, y).shape == (3,)


def test_dcgan_is_the_studys_shape() -> None:
    """64 px: five ConvTranspose2d layers with BN + LeakyReLU, mirrored discriminator of strided convs."""
    G = DCGANGenerator(num_classes=4, image_size=64, width=8)
    D = DCGANDiscriminator(num_classes=4, image_size=64, width=8)
    kinds = [type(m).__name__ for m in G.net]
    assert kinds.count("ConvTranspose2d") == 5
    assert kinds.count("LeakyReLU") == 4 and kinds.count("BatchNorm2d") == 4 and kinds[-1] == "Tanh"
    assert sum(isinstance(m, torch.nn.Conv2d) for m in D.net) == 5
    # per-class (one species) variant has no label pathway at all
    assert DCGANGenerator(num_classes=1, image_size=64, width=8).embed is None
    assert ResGenerator(2, 128, width=2)(torch.randn(2, 128), torch.tensor([0, 1])).shape[-1] == 128


@pytest.mark.parametrize("arch", ["cgan", "dcgan"])
def test_class_label_changes_the_output(arch: str) -> None:
    data = tiny_image_set()
    state = init_state(GANConfig(arch=arch, image_size=16, batch_size=8, g_width=4, d_width=4), data.classes)
    for _ in range(
        3
    ):  # conditional BN starts class-independent (gain 1, bias 0); a few steps make it conditional
        train_step(state, data)
    G = state.sampler.eval()
    z = torch.randn(1, state.cfg.z_dim).repeat(3, 1)
    with torch.no_grad():
        out = G(z, torch.tensor([0, 1, 2]))
        again = G(z, torch.tensor([0, 1, 2]))
    assert torch.equal(out, again)  # deterministic in eval mode ...
    assert (out[0] - out[1]).abs().max() > 1e-4  # ... and the label, only, changed the image
    assert (out[1] - out[2]).abs().max() > 1e-4
    D = state.D.eval()
    x = torch.zeros(2, 3, 16, 16)
    with torch.no_grad():
        assert D(x, torch.tensor([0, 1])).unique().numel() == 2


def test_spectral_norm_is_active_in_both_cgan_networks() -> None:
    torch.manual_seed(0)
    G, D = ResGenerator(3, 16, width=4), ProjectionDiscriminator(3, 16, width=4)
    for net in (G, D):
        layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    # after power iterations the effective weight's largest singular value is 1
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    for _ in range(30):
        D(x, y)
    for m in D.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            w = m.weight.detach().reshape(m.weight.shape[0], -1)
            assert torch.linalg.matrix_norm(w, ord=2) == pytest.approx(1.0, abs=0.05)
    orig = D.linear.parametrizations.weight.original.detach()
    assert torch.linalg.matrix_norm(orig, ord=2) != pytest.approx(
        1.0, abs=0.05
    )  # the raw weight is not normalised
    assert not any(parametrize.is_parametrized(m) for m in DCGANDiscriminator(3, 16, width=4).modules())


def test_diffaugment_is_differentiable_and_seeded() -> None:
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, "color,translation,cutout", gen=torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    a = diff_augment(x.detach(), gen=torch.Generator().manual_seed(3))
    b = diff_augment(x.detach(), gen=torch.Generator().manual_seed(3))
    c = diff_augment(x.detach(), gen=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(diff_augment(x.detach(), ""), x.detach())
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, "rotate")


def test_diffaugment_probability_applies_each_policy_to_that_share_of_images() -> None:
    x = torch.randn(400, 3, 8, 8, requires_grad=True)
    assert diff_augment(x, gen=torch.Generator().manual_seed(0), p=0.0) is x  # p = 0: untouched, no draws
    full = diff_augment(x.detach(), gen=torch.Generator().manual_seed(1), p=1.0)
    assert torch.equal(
        full, diff_augment(x.detach(), gen=torch.Generator().manual_seed(1))
    )  # p = 1: as before
    out = diff_augment(x, "color", gen=torch.Generator().manual_seed(2), p=0.3)
    same = (out == x).flatten(1).all(dim=1).float().mean().item()
    assert 0.62 < same < 0.78  # 70% of 400 images untouched (binomial sd 2.3%)
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, "color,rotate", p=0.0)  # a typo fails at once, not when an adaptive p first rises
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_adaptive_p_follows_the_overfitting_heuristic() -> None:
    from birdlens.augment.gan.diffaug import AdaptiveP

    ada = AdaptiveP(target=0.6, speed_images=32, interval=2)
    ada.observe(torch.tensor([1.0, 2.0, 3.0, -1.0]))
    assert ada.p == 0.0  # adjusted only every `interval` steps
    ada.observe(torch.tensor([1.0, 1.0, 1.0, 1.0]))  # r = (2 + 4) / 8 = 0.75 > 0.6: p += 8 / 32
    assert ada.p == pytest.approx(0.25)
    ada.observe(torch.tensor([1.0, -1.0, 1.0, -1.0]))
    ada.observe(torch.tensor([1.0, 1.0, -1.0, -1.0]))  # r = 0 < 0.6: p -= 0.25
    assert ada.p == pytest.approx(0.0)
    for _ in range(4):
        ada.observe(-torch.ones(4))
    assert ada.p == 0.0  # clamped at 0
    for _ in range(20):
        ada.observe(torch.ones(4))
    assert ada.p == 1.0  # and at 1
    restored = AdaptiveP()
    restored.load_state_dict(ada.state_dict())
    assert restored.state_dict() == ada.state_dict()


def test_translation_shifts_and_cutout_zeroes_a_quarter() -> None:
    x = torch.arange(1.0, 65.0).view(1, 1, 8, 8).repeat(64, 3, 1, 1)
    t = rand_translation(x, gen=torch.Generator().manual_seed(0))
    for i in range(len(x)):  # each output is the input shifted by (dy, dx) in [-1, 1] with zero fill
        ok = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ref = torch.zeros_like(x[i])
                ys, yd = (slice(0, 8 - dy), slice(dy, 8)) if dy >= 0 else (slice(-dy, 8), slice(0, 8 + dy))
                xs, xd = (slice(0, 8 - dx), slice(dx, 8)) if dx >= 0 else (slice(-dx, 8), slice(0, 8 + dx))
                ref[:, yd, xd] = x[i][:, ys, xs]
                ok |= torch.equal(ref, t[i])
        assert ok
    ones = torch.ones(200, 3, 16, 16)
    cut = rand_cutout(ones, gen=torch.Generator().manual_seed(0))
    frac_zero = (cut == 0).float().mean().item()
    assert 0.15 < frac_zero <= 0.25  # an 8x8 square of 16x16 (less where it is clipped at a border)
    assert ((cut == 0) | (cut == 1)).all()


def test_diffaugment_is_applied_to_real_and_fake_in_both_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    import birdlens.augment.gan.train as train_mod

    calls: list[tuple[bool, int]] = []

    def spy(x: torch.Tensor, policy: str, gen: torch.Generator | None = None, p: float = 1.0) -> torch.Tensor:
        calls.append((x.requires_grad, x.shape[0]))
        return diff_augment(x, policy, gen=gen, p=p)

    monkeypatch.setattr(train_mod, "diff_augment", spy)
    data = tiny_image_set()
    state = init_state(
        GANConfig(arch="cgan", image_size=16, batch_size=6, g_width=4, d_width=4), data.classes
    )
    train_step(state, data)
    # two D steps (the cgan default): real (no grad) + detached fake (no grad) each; G step: fake with grad
    # flowing back into G
    assert calls == [(False, 6)] * 4 + [(True, 6)]
    calls.clear()
    off = init_state(GANConfig(arch="dcgan", image_size=16, batch_size=6, g_width=4, d_width=4), data.classes)
    train_step(off, data)
    assert calls == []  # the study's baseline has no DiffAugment


def test_noise_inputs_add_a_scaled_map_per_image_and_follow_their_source() -> None:
    """h + scale[c] * n with one map per image; zero scale (the start) leaves the generator as it was."""
    inj = NoiseInjection(2)
    h = torch.zeros(3, 2, 4, 5)
    with torch.no_grad():
        inj.scale.copy_(torch.tensor([0.5, -2.0]))
    with noise_source(torch.Generator().manual_seed(7)):
        out = inj(h)
    n = torch.randn(3, 1, 4, 5, generator=torch.Generator().manual_seed(7))  # by hand
    assert torch.allclose(out[:, 0:1], 0.5 * n) and torch.allclose(out[:, 1:2], -2.0 * n)

    torch.manual_seed(0)
    plain = ResGenerator(3, 16, width=4)
    torch.manual_seed(0)
    noisy = ResGenerator(3, 16, width=4, noise=True)  # the same draws for every other weight
    assert sum(isinstance(m, NoiseInjection) for m in noisy.modules()) == 2 * len(noisy.blocks)
    assert not any(isinstance(m, NoiseInjection) for m in plain.modules())
    noisy.load_state_dict(plain.state_dict(), strict=False)
    z, y = torch.randn(4, 128), torch.tensor([0, 1, 2, 0])
    plain.eval(), noisy.eval()
    with torch.no_grad():
        assert torch.allclose(noisy(z, y), plain(z, y), atol=1e-6)  # scales start at 0
        for m in noisy.modules():
            if isinstance(m, NoiseInjection):
                m.scale.fill_(0.3)
        with noise_source(torch.Generator().manual_seed(1)):
            a = noisy(z, y)
        with noise_source(torch.Generator().manual_seed(1)):
            b = noisy(z, y)
        with noise_source(torch.Generator().manual_seed(2)):
            c = noisy(z, y)
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-3  # the same z, another noise: another image
    # sampling is reproducible: generate() draws the noise inputs from a fixed seed
    assert torch.equal(generate(noisy, y, z), generate(noisy, y, z))
    with pytest.raises(ValueError, match="cgan option"):
        GANConfig(arch="dcgan", noise_inputs=True).resolved()


def test_noise_inputs_learn_and_are_drawn_from_the_trainers_rng() -> None:
    data = tiny_image_set()
    cfg = GANConfig(image_size=16, batch_size=4, g_width=4, d_width=4, noise_inputs=True, seed=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(123 + len(runs))  # another global RNG state must not change the run
        state = init_state(cfg, data.classes)
        for _ in range(3):
            train_step(state, data)
        runs.append(state)
    scales = [m.scale for m in runs[0].G.modules() if isinstance(m, NoiseInjection)]
    assert any(s.abs().max() > 0 for s in scales)  # the generator learns to use them
    for (k, a), b in zip(runs[0].G.state_dict().items(), runs[1].G.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
