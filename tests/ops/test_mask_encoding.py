"""MEInst's mask encoding against numpy: inverse-sigmoid jitter, PCA fit (sklearn conventions), whitening, round
trip and the reconstruction mIoU."""

import numpy as np
import torch

from blendseg.ops.mask_encoding import PCACodec, StreamingPCA, inverse_sigmoid_targets, reconstruction_iou


def _masks(n=300, size=8, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx, r = g.uniform(1, size - 1), g.uniform(1, size - 1), g.uniform(1.5, size / 2)
        out.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).reshape(-1))
    return torch.from_numpy(np.stack(out).astype(np.float32))


def test_inverse_sigmoid_jitter_range_and_sign():
    m = _masks(50)
    y = inverse_sigmoid_targets(m, torch.Generator().manual_seed(0))
    lo, hi = -np.log(0.05 / 0.95), -np.log(0.01 / 0.99)  # r in [0.01, 0.05]
    assert ((y > 0) == (m > 0.5)).all()
    assert y.abs().min() >= lo - 1e-4 and y.abs().max() <= hi + 1e-4


def test_streaming_pca_equals_numpy_svd_in_any_batching():
    x = inverse_sigmoid_targets(_masks(), torch.Generator().manual_seed(1))
    pca = StreamingPCA(64)
    for chunk in x.split(37):
        pca.update(chunk)
    comps, ev, mean, ratio = pca.fit(10)
    xn = x.double().numpy()
    centred = xn - xn.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(mean.numpy(), xn.mean(0), atol=1e-5)
    np.testing.assert_allclose(ev.numpy(), (s**2 / (len(xn) - 1))[:10], rtol=1e-4)
    np.testing.assert_allclose(ratio.numpy(), (s**2 / (s**2).sum())[:10], rtol=1e-4)
    for k in range(10):  # same directions up to sign, and sklearn's sign rule (largest |loading| positive)
        assert abs(float(np.dot(comps[k].numpy(), vt[k]))) > 0.999
        assert comps[k][comps[k].abs().argmax()] > 0


def test_codec_whitening_and_round_trip_against_numpy():
    x = _masks(200)
    g = torch.Generator().manual_seed(2)
    pca = StreamingPCA(64)
    pca.update(inverse_sigmoid_targets(x, g))
    comps, ev, mean, _ = pca.fit(64)  # full rank: the round trip is exact
    codec = PCACodec(64, 8, whiten=True, sigmoid=True)
    codec.load_fit(comps, ev, mean)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    codes = codec.encode(x, g1)
    y = inverse_sigmoid_targets(x, g2).numpy()
    expected = (y - mean.numpy()) @ comps.numpy().T / np.sqrt(ev.numpy())  # whitened codes
    np.testing.assert_allclose(codes.numpy(), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(codes.var(0)[:10].numpy(), np.ones(10), atol=0.1)  # whitened: unit variance
    np.testing.assert_allclose(codec.decode(codes).numpy(), y, atol=2e-3)  # decode inverts encode
    assert float(reconstruction_iou(codec, x, g).mean()) > 0.999
    low = PCACodec(4, 8)
    low.load_fit(comps[:4], ev[:4], mean)
    assert float(reconstruction_iou(low, x, g).mean()) < float(reconstruction_iou(codec, x, g).mean())
    probs = codec.probabilities(codes)
    assert probs.shape == (200, 8, 8) and ((probs > 0.5).flatten(1) == (x > 0.5)).all()


def test_target_codes_are_float32_under_autocast():
    """MEInst's target codes under the training's autocast (bf16 here, fp16 on CUDA): float32, the values of the
    plain encode (a reduced-precision matmul would round the targets)."""
    x = _masks(50)
    pca = StreamingPCA(64)
    pca.update(inverse_sigmoid_targets(x, torch.Generator().manual_seed(1)))
    codec = PCACodec(16, 8, whiten=True, sigmoid=True)  # 16-d codes of 8 x 8 masks
    codec.load_fit(*pca.fit(16)[:3])
    plain = codec.encode(x, torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = codec.encode(x, torch.Generator().manual_seed(3))
    assert under.dtype == torch.float32 and torch.equal(under, plain)
