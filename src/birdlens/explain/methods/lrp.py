"""Layer-wise Relevance Propagation (Bach et al. 2015) with zennit's rules, composites and canonizers.

Why zennit: it implements the LRP rules as backward hooks on the real modules (no model rewrite), with the
composites of Montavon et al. 2019 (``epsilon_plus_flat``, the recommended default: epsilon for dense layers,
z+ for convolutions, flat for the first layer; and the alpha2-beta1 variants) and canonizers that make a
network LRP-ready (BatchNorm merged into the preceding layer, residual sums made explicit). The output
relevance is the target's logit, so the input relevances sum to it where no bias or epsilon absorbs any
(the conservation law, tested by hand on a toy network). The rules are defined for ReLU networks: a model
holding a SiLU/Swish (or other smooth) activation is refused with the message every ReLU-only method gives,
and so is a residual block without a canonizer here (Lite0's ReLU6 blocks, Xception).
Images share each modified backward in batches of ``batch_size``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from birdlens.explain.base import (
    Explainer,
    Param,
    UnsupportedMethodError,
    refuse_smooth_activations,
    register,
)
from birdlens.explain.hooks import frozen_parameters

COMPOSITES = ("epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "epsilon_plus", "epsilon_alpha2_beta1")


def _timm_residual_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's BasicBlock/Bottleneck forward in eval mode (drop-block and drop-path are identities there) with
    the residual sum through a zennit ``Sum``, so its rule splits the relevance between the two branches."""
    shortcut = x
    if hasattr(self, "conv3"):  # Bottleneck
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
        x = self.bn3(self.conv3(x))
        act = self.act3
    else:  # BasicBlock
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.bn2(self.conv2(x))
        act = self.act2
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return act(self.canonizer_sum(torch.stack([shortcut, x], dim=-1)))


def canonizers_for(model: nn.Module) -> list[Any]:
    """zennit canonizers that fit ``model``: BatchNorm merging always, residual sums for torchvision's and
    timm's ResNet blocks (zennit ships the torchvision one; timm's blocks get the same treatment here)."""
    from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
    from zennit.layer import Sum

    out: list[Any] = [SequentialMergeBatchNorm()]
    try:
        from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

        out += [ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer()]
    except ImportError:  # zennit.torchvision needs torchvision
        pass
    from timm.models.resnet import BasicBlock, Bottleneck

    def timm_block(name: str, module: nn.Module) -> dict[str, Any] | None:
        if not isinstance(module, (BasicBlock, Bottleneck)):
            return None
        if module.se is not None or (module.drop_path is not None and module.training):
            raise ValueError(
                f"lrp: the ResNet block {name} has squeeze-excitation, which LRP rules do not cover"
            )
        return {"forward": _timm_residual_forward.__get__(module), "canonizer_sum": Sum()}

    out.append(AttributeCanonizer(timm_block))
    return out


def refuse_uncovered_residuals(model: nn.Module) -> None:
    """:class:`UnsupportedMethodError` for a residual block no canonizer here covers (timm's EfficientNet and
    MobileNet blocks with a skip, Xception's blocks): its sum would pass the relevance to both branches
    whole, so the map would be silently wrong."""
    from timm.models.xception import Block as XceptionBlock

    for name, module in model.named_modules():
        if getattr(module, "has_skip", False) is True or isinstance(module, XceptionBlock):
            raise UnsupportedMethodError(
                f"'lrp' is refused on this model: its block {name} ({type(module).__name__}) adds a skip "
                "connection that birdlens has no LRP canonizer for, so the relevance would be silently wrong. "
                "LRP covers the simple CNN, VGG and ResNet; use gradcam, ig, lime or shap here."
            )


@contextlib.contextmanager
def not_inplace(model: nn.Module) -> Iterator[None]:
    """In-place activations switched off for the call: a rule's hook must see the activation it wrapped."""
    changed = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in changed:
        m.inplace = False
    try:
        yield
    finally:
        for m in changed:
            m.inplace = True


def make_composite(name: str, epsilon: float, canonizers: list[Any]) -> Any:
    """The zennit composite ``name`` with ``epsilon`` for its epsilon rule."""
    from zennit import composites

    cls = {
        "epsilon_plus_flat": composites.EpsilonPlusFlat,
        "epsilon_alpha2_beta1_flat": composites.EpsilonAlpha2Beta1Flat,
        "epsilon_plus": composites.EpsilonPlus,
        "epsilon_alpha2_beta1": composites.EpsilonAlpha2Beta1,
    }[name]
    return cls(epsilon=epsilon, canonizers=canonizers)


@register("lrp", "layerwise_relevance")
class Lrp(Explainer):
    """Input relevance of the target's logit, summed over colour channels (signed)."""

    title = "LRP"
    # relevance starts at one output logit (the rules conserve it layer by layer); a difference of two has
    # no agreed rule set, so a contrast is refused, not approximated
    contrastive = False
    panel_order = 75
    signed = True
    batched = True
    uses_gradients = True  # a modified backward pass: relevance flows as gradients do, rule by rule
    overlay_sigma = 1.5
    tunable = (
        Param("composite", str, "epsilon_plus_flat", choices=COMPOSITES, doc="zennit's rule composite"),
        Param("epsilon", float, 1e-6, lo=1e-12, hi=10.0, doc="stabiliser of the epsilon rule"),
        Param("batch_size", int, 8, lo=1, hi=64, doc="images per backward"),
    )

    def __init__(
        self,
        model: nn.Module,
        *,
        composite: str = "epsilon_plus_flat",
        epsilon: float = 1e-6,
        batch_size: int = 8,
        **common: Any,
    ) -> None:
        self.check_model(model)
        super().__init__(model, **common)
        self.composite = self.checked("composite", composite)
        self.epsilon = self.checked("epsilon", epsilon)
        self.batch_size = self.checked("batch_size", batch_size)
        self.params.update(composite=self.composite, epsilon=self.epsilon, batch_size=self.batch_size)

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        """Refused on smooth activations and on skip connections without a canonizer (the rules do not hold)."""
        refuse_smooth_activations("lrp", model)
        refuse_uncovered_residuals(model)

    def relevance(self, x: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """``(relevance [B,C,H,W], logits [B,K], target [B])``, ``batch_size`` images per modified backward."""
        composite = make_composite(self.composite, self.epsilon, canonizers_for(self.model))
        rels, logits, targets = [], [], []
        with frozen_parameters(self.model), not_inplace(self.model), composite.context(self.model):
            for lo in range(0, x.shape[0], self.batch_size):
                pts = x[lo : lo + self.batch_size].clone().requires_grad_(True)
                with torch.enable_grad():
                    out = self.logits(pts)
                    t = out.detach().argmax(1) if target is None else target[lo : lo + self.batch_size]
                    seed = torch.zeros_like(out).scatter_(
                        1, t.view(-1, 1), out.detach().gather(1, t.view(-1, 1))
                    )
                    (rel,) = torch.autograd.grad(out, pts, grad_outputs=seed)
                rels.append(rel.detach())
                logits.append(out.detach().float())
                targets.append(t)
        return torch.cat(rels), torch.cat(logits), torch.cat(targets)

    @staticmethod
    def channel_map(attributions: torch.Tensor) -> torch.Tensor:
        """The map of per-channel relevance ``[B,C,H,W]``: its sum over channels (signed)."""
        return attributions.sum(1)

    def map_of(self, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.channel_map(values)

    def _explain(self, x: torch.Tensor, target: torch.Tensor | None) -> Any:
        rel, logits, target = self.relevance(x, target)
        scores = self.target_scores(logits, target)
        scores["attributions"] = rel.cpu()
        scores["relevance_sum"] = rel.flatten(1).sum(1).float().cpu()
        return self.channel_map(rel), target, scores, {}
