"""What the FCOS core hands to its losses and to the methods built on it: the assignment of a batch
(:class:`FCOSTargets`, made by ``fcos_loss.fcos_targets``) and the raw outputs (:class:`FCOSOutput`, made by
``fcos.FCOS``). Both sides import them from here, so neither imports the other.

Shape legend: T = N*P locations of a batch (P per image over the L levels), Q positives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn


@dataclass
class FCOSTargets:
    """Assignment of a batch, flattened in reference order (level, image, y, x) over T = N*P locations.

    Attributes:
        labels: (T,) class per location, ``num_classes`` for background.
        reg_targets: (T, 4) (l, t, r, b) divided by the level stride.
        gt_inds: (T,) matched GT index over the whole batch (offset by the GT counts of earlier images), -1 if
            negative. This is the index extensions use to gather per-instance targets.
        im_inds, levels: (T,) image and level of each location.
        pos_inds: (Q,) indices of the positives into the T locations.
        ctr_targets: (Q,) centerness targets of the positives.
        num_pos_avg: max(mean over processes of the positive count, 1).
        loss_denorm: max(mean over processes of the centerness-target sum, 1e-6).
    """

    labels: Tensor
    reg_targets: Tensor
    gt_inds: Tensor
    im_inds: Tensor
    levels: Tensor
    pos_inds: Tensor
    ctr_targets: Tensor
    num_pos_avg: Tensor
    loss_denorm: Tensor


@dataclass
class FCOSOutput:
    """Raw FCOS outputs for a batch (lists over the L levels) and, when targets were given, the losses.

    ``targets`` carries the assignment (positives, matched GT indices) so extensions can build their own
    per-instance losses; ``features`` names every backbone and FPN map (``res2``..``res5``, ``p3``..``p7``, ``p2``
    when the FPN has it) for extensions that need them (bases, semantics).
    """

    logits: list[Tensor]
    box_reg: list[Tensor]
    quality: list[Tensor]
    embeds: list[Tensor] | None
    locations: list[Tensor]
    image_sizes: list[tuple[int, int]]
    features: dict[str, Tensor]
    losses: dict[str, Tensor] = field(default_factory=dict)
    targets: FCOSTargets | None = None
    embed_inputs: list[Tensor] | None = None  # (N, F', H, W) per level when the embeddings are made after decoding

    def dense_embeds(self, head: nn.Module) -> list[Tensor] | None:
        """The per-level embeddings (N, E, H, W) at every location, made now (by ``head.embed_conv``, an
        :class:`~blendseg.modeling.core.fcos.FCOSHead`'s) if they were deferred."""
        if self.embed_inputs is None:
            return self.embeds
        return [head.embed_conv(x) for x in self.embed_inputs]
