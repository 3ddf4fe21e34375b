"""MEInst's mask encoding as pure pieces (adelaidet.md §3.3-3.4): the inverse-sigmoid preprocessing with random
clipping, a PCA codec with whitening, a streaming (bounded-memory) PCA fit and the reconstruction mIoU.

Shape legend: N masks, S mask size (28), P = S*S pixels (784), D code dimension (60).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def inverse_sigmoid_targets(masks: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(N, P) logits of binary masks (N, P) with the reference's jitter: r = max(U(0, 0.05), 0.01) per element,
    v = 1 - r on the mask and r off it, y = -ln((1 - v) / v) (so |y| lies in about [2.94, 4.60])."""
    r = torch.rand(masks.shape, generator=generator, device=masks.device if generator is None else "cpu")
    r = (r.to(masks.device) * 0.05).clamp(min=0.01)
    v = torch.where(masks > 0.5, 1 - r, r)
    return -torch.log((1 - v) / v)


class PCACodec(nn.Module):
    """Class-agnostic PCA mask codec: ``encode`` (N, P) binary masks -> (N, D) codes, ``decode`` codes -> (N, P)
    logits (``sigmoid=True``) or clamped probabilities. Buffers ``components`` (D, P), ``explained_variances`` (D,)
    and ``means`` (P,) are saved in checkpoints (names as AdelaiDet's ``mask_encoding``)."""

    def __init__(self, dim: int = 60, mask_size: int = 28, whiten: bool = True, sigmoid: bool = True) -> None:
        super().__init__()
        p = mask_size * mask_size
        self.dim, self.mask_size, self.whiten, self.sigmoid = dim, mask_size, whiten, sigmoid
        self.register_buffer("components", torch.zeros(dim, p))
        self.register_buffer("explained_variances", torch.ones(dim))
        self.register_buffer("means", torch.zeros(p))
        self._fitted: bool | None = False  # None: ask the buffers (after a state dict was loaded)

    @property
    def fitted(self) -> bool:
        """Whether the components hold a fit; read from the device once after a load, not at every forward."""
        if self._fitted is None:
            self._fitted = bool(self.components.abs().sum() > 0)
        return self._fitted

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._fitted = None

    def load_fit(self, components: Tensor, explained_variances: Tensor, means: Tensor) -> None:
        if components.shape != self.components.shape:
            raise ValueError(f"PCA components {tuple(components.shape)}, expected {tuple(self.components.shape)}")
        self.components.copy_(components)
        self.explained_variances.copy_(explained_variances)
        self.means.copy_(means)
        self._fitted = None

    def encode(self, masks: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(N, P) binary -> (N, D): inverse sigmoid (jittered), minus the mean, onto the components, whitened; in
        float32 whatever the training's autocast (targets, not activations: fp16 would round them)."""
        with torch.autocast(masks.device.type, enabled=False):
            x = inverse_sigmoid_targets(masks, generator) if self.sigmoid else masks.float()
            codes = (x.float() - self.means.float()) @ self.components.float().t()
            return codes / self.explained_variances.float().sqrt() if self.whiten else codes

    def decode(self, codes: Tensor) -> Tensor:
        """(N, D) -> (N, P) logits (sigmoid mode; apply sigmoid for probabilities) or probabilities in
        [0.01, 0.99] (sigmoid=False)."""
        basis = self.components * self.explained_variances.sqrt()[:, None] if self.whiten else self.components
        out = codes @ basis + self.means
        return out if self.sigmoid else out.clamp(0.01, 0.99)

    def probabilities(self, codes: Tensor) -> Tensor:
        """(N, S, S) mask probabilities of codes (N, D)."""
        out = self.decode(codes)
        out = out.sigmoid() if self.sigmoid else out
        return out.view(-1, self.mask_size, self.mask_size)


class StreamingPCA:
    """Exact PCA from streamed batches: running sum and float64 scatter matrix (P x P, 4.9 MB at P = 784), so
    memory stays bounded whatever the number of masks. ``explained_variance`` uses n - 1 as sklearn's PCA."""

    def __init__(self, num_features: int) -> None:
        self.n = 0
        self.sum = torch.zeros(num_features, dtype=torch.float64)
        self.scatter = torch.zeros(num_features, num_features, dtype=torch.float64)

    def update(self, x: Tensor) -> None:
        x = x.double()
        self.n += x.shape[0]
        self.sum += x.sum(0)
        self.scatter += x.t() @ x

    def fit(self, dim: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(components (D, P), explained_variance (D,), mean (P,), explained_variance_ratio (D,)), float32."""
        if self.n < 2:
            raise ValueError(f"PCA needs at least 2 samples, got {self.n}")
        mean = self.sum / self.n
        cov = (self.scatter - self.n * torch.outer(mean, mean)) / (self.n - 1)
        evals, evecs = torch.linalg.eigh(cov)
        order = evals.argsort(descending=True)[:dim]
        comps = evecs[:, order].t()
        # sklearn's sign convention (svd_flip): the largest |loading| of each component is positive
        signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        comps = comps * signs
        ev = evals[order].clamp(min=1e-12)
        ratio = ev / evals.clamp(min=0).sum()
        return comps.float(), ev.float(), mean.float(), ratio.float()


def reconstruction_iou(codec: PCACodec, masks: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(N,) IoU of each binary mask (N, P) with its encode -> decode -> > 0.5 reconstruction (the reference's
    LME/mask_evaluation, the paper's upper-bound analysis)."""
    rec = codec.decode(codec.encode(masks, generator))
    rec = (rec.sigmoid() if codec.sigmoid else rec) > 0.5
    gt = masks > 0.5
    inter = (rec & gt).sum(1).float()
    union = (rec | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
