"""BEV encoder: raster encoding, camera rays, sampled layout vs a slow projection, attention locality."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perception.bev_encoder import BEVEncoder, BEVEncoderConfig
from perception.bev_sampling import build_sampled_layout, pixel_rays, raster_encoding
from perception.depth import DepthHeadConfig
from tests.perception.model_fixtures import TINY_GRID, canonical_rig, tiny_config
from tests.perception.model_fixtures import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

IMG = (48, 96)


def test_raster_encoding_is_distinct_per_cell():
    enc = raster_encoding(16, 16, 32)
    flat = enc.flatten(1).T  # (HW, C)
    d = torch.cdist(flat, flat)
    assert enc.shape == (32, 16, 16)
    assert (d + torch.eye(256) * 10).min() > 1e-3


def test_pixel_rays_project_back_to_their_pixels():
    intr, ext = canonical_rig(tiny_config())
    rays = pixel_rays(intr.double(), ext.double(), (3, 6), 16)  # (6, 3, 6, 3)
    for c in range(6):
        cam = rays[c].reshape(-1, 3) @ ext[c, :3, :3].double()  # R^T ray
        uvw = cam @ intr[c].double().T
        uv = uvw[:, :2] / uvw[:, 2:]
        v, u = torch.meshgrid(torch.arange(3) * 16 + 7.5, torch.arange(6) * 16 + 7.5, indexing="ij")
        torch.testing.assert_close(uv, torch.stack([u, v], -1).reshape(-1, 2).double(), atol=1e-6, rtol=0)
        assert torch.allclose(rays[c].norm(dim=-1), torch.ones(3, 6, dtype=torch.float64))


def test_sampled_layout_matches_a_slow_projection():
    intr, ext = canonical_rig(tiny_config())
    heights = (0.0, 1.5)
    lay = build_sampled_layout(TINY_GRID, heights, intr, ext, IMG)
    centres = TINY_GRID.cell_centers(dtype=torch.float64).reshape(-1, 2)
    rng = np.random.default_rng(0)
    assert len(lay.point_cell) > 0 and bool((lay.point_cell[1:] >= lay.point_cell[:-1]).all())  # sorted by cell
    for cell in rng.choice(len(centres), 40, replace=False):
        expected = set()
        for c in range(6):
            r, t, k = ext[c, :3, :3].double(), ext[c, :3, 3].double(), intr[c].double()
            for z in heights:
                p = r.T @ (torch.tensor([*centres[cell].tolist(), z], dtype=torch.float64) - t)
                if p[2] <= 0.1:
                    continue
                u, v = (k @ p)[:2] / p[2]
                if -0.5 <= u <= IMG[1] - 0.5 and -0.5 <= v <= IMG[0] - 0.5:
                    expected.add((c, round((2 * float(u) + 1) / IMG[1] - 1, 4), round((2 * float(v) + 1) / IMG[0] - 1, 4), round(float(p[2]), 3)))
        got = set()
        for point in (lay.point_cell == cell).nonzero().flatten().tolist():
            gx, gy = lay.point_grid[point].tolist()
            got.add((int(lay.point_cam[point]), round(gx, 4), round(gy, 4), round(float(lay.point_depth[point]), 3)))
        assert got == expected, cell


def _encoder(attention: str, ffn_ratio: int = 0) -> BEVEncoder:
    torch.manual_seed(0)
    cfg = BEVEncoderConfig(channels=16, heads=2, attention=attention, pillar_heights=(0.0, 1.5), context_blocks=0, ffn_ratio=ffn_ratio)
    return BEVEncoder(16, TINY_GRID, IMG, 16, cfg).eval()


@torch.no_grad()
def test_sampled_attention_only_reads_cameras_that_see_the_cell():
    enc = _encoder("sampled")
    intr, ext = canonical_rig(tiny_config())
    feats = torch.rand(1, 6, 16, 3, 6)
    mask = torch.ones(1, 6, dtype=torch.bool)
    base = enc(feats, intr[None], ext[None], mask)
    changed = feats.clone()
    changed[0, 3] = torch.rand(16, 3, 6)  # CAM_BACK
    out = enc(changed, intr[None], ext[None], mask)
    lay = enc.layout(intr, ext)
    hw = TINY_GRID.shape[0] * TINY_GRID.shape[1]
    sees_back = torch.zeros(hw, dtype=torch.bool).index_fill_(0, lay.point_cell[lay.point_cam == 3], True).reshape(TINY_GRID.shape)
    diff = (out - base).abs().amax(1)[0]
    assert sees_back.any() and (~sees_back).any()
    assert torch.all(diff[~sees_back] == 0)
    assert torch.all(diff[sees_back] > 0)


@torch.no_grad()
def test_sampled_attention_equals_a_per_cell_softmax_reference():
    enc = _encoder("sampled")  # no FFN: the layer ends x = tokens + out(ctx)
    intr, ext = canonical_rig(tiny_config())
    feats = torch.rand(1, 6, 16, 3, 6)
    keys = enc.key_proj(feats[0]) + enc.camera_encoding(intr[None], ext[None], (3, 6))[0]  # (6, C, 3, 6)
    vals = enc.value_proj(feats[0])
    lay = enc.layout(intr, ext)
    layer = enc.layers[0]
    q0 = (enc.queries[None] + enc.pe_proj(enc.raster_pe[None])).flatten(2)[0].T  # (HW, C)
    q = layer.q(layer.norm_q(q0))
    # Reference reads: F.grid_sample of each point in its own camera.
    samp_k = torch.zeros(len(lay.point_cell), 16)
    samp_v = torch.zeros(len(lay.point_cell), 16)
    for c in range(6):
        sel = (lay.point_cam == c).nonzero().flatten()
        g = lay.point_grid[sel][None, None]  # (1, 1, n, 2)
        samp_k[sel] = torch.nn.functional.grid_sample(keys[c : c + 1], g, align_corners=False)[0, :, 0].T
        samp_v[sel] = torch.nn.functional.grid_sample(vals[c : c + 1], g, align_corners=False)[0, :, 0].T
    ctx = torch.zeros_like(q0)
    for cell in range(q0.shape[0]):  # slow: one softmax per cell over its own points
        pts = (lay.point_cell == cell).nonzero().flatten()
        if len(pts) == 0:
            continue
        kk, vv = samp_k[pts], samp_v[pts]  # (n, C)
        for hd in range(2):
            sl = slice(hd * 8, hd * 8 + 8)
            a = torch.softmax(kk[:, sl] @ q[cell, sl] / math.sqrt(8), dim=0)
            ctx[cell, sl] = a @ vv[:, sl]
    x = q0 + layer.out(ctx)
    expected = x.T.reshape(1, 16, *TINY_GRID.shape)
    got = enc(feats, intr[None], ext[None], torch.ones(1, 6, dtype=torch.bool))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_missing_camera_is_masked_in_both_modes():
    intr, ext = canonical_rig(tiny_config())
    for mode in ("sampled", "dense"):
        enc = _encoder(mode)
        feats = torch.rand(1, 6, 16, 3, 6)
        mask = torch.ones(1, 6, dtype=torch.bool)
        mask[0, 2] = False
        a = enc(feats, intr[None], ext[None], mask)
        feats[0, 2] = torch.rand(16, 3, 6) * 10
        b = enc(feats, intr[None], ext[None], mask)
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert a.shape == (1, 16, *TINY_GRID.shape)


@torch.no_grad()
def test_dense_attention_equals_a_slow_softmax_reference():
    enc = _encoder("dense", ffn_ratio=2)  # with the FFN: the layer ends x + ffn(norm_f(x))
    intr, ext = canonical_rig(tiny_config())
    feats = torch.rand(1, 6, 16, 3, 6)
    mask = torch.ones(1, 6, dtype=torch.bool)
    c = 16
    keys = enc.key_proj(feats[0]) + enc.camera_encoding(intr[None], ext[None], (3, 6))[0]  # (6, C, 3, 6)
    vals = enc.value_proj(feats[0])
    k = keys.permute(0, 2, 3, 1).reshape(-1, c)
    v = vals.permute(0, 2, 3, 1).reshape(-1, c)
    q0 = (enc.queries[None] + enc.pe_proj(enc.raster_pe[None])).flatten(2)[0].T  # (HW, C)
    layer = enc.layers[0]
    q = layer.q(layer.norm_q(q0))
    outs = []
    for hd in range(2):
        sl = slice(hd * 8, hd * 8 + 8)
        a = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(8), dim=1)
        outs.append(a @ v[:, sl])
    x = q0 + layer.out(torch.cat(outs, 1))
    x = x + layer.ffn[2](torch.nn.functional.gelu(layer.ffn[0](torch.nn.functional.layer_norm(x, (c,), layer.norm_f.weight, layer.norm_f.bias))))
    expected = x.T.reshape(1, c, *TINY_GRID.shape)
    got = enc(feats, intr[None], ext[None], mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


DEPTH = DepthHeadConfig(enabled=True, attention=True, bins=20, min_m=1.0, max_m=41.0)


FINE = 4  # channels of the stride-8 map in the fine-level tests


def _layered_encoder(layers: int = 1, depth: DepthHeadConfig | None = None, fine: bool = False) -> BEVEncoder:
    torch.manual_seed(0)
    cfg = BEVEncoderConfig(channels=16, heads=2, pillar_heights=(0.0, 1.5), num_layers=layers, fine_level=fine)
    enc = BEVEncoder(8, TINY_GRID, IMG, 16, cfg, depth, fine_channels=FINE if fine else 0).eval()
    for layer in enc.layers:  # the depth-weighted output starts at zero: give it something to compute
        if layer.depth_out is not None:
            torch.nn.init.normal_(layer.depth_out.weight, std=0.3)
    for proj in (enc.fine_key, enc.fine_value):  # so do the fine level's projections
        if proj is not None:
            torch.nn.init.normal_(proj.weight, std=0.3)
            torch.nn.init.normal_(proj.bias, std=0.3)
    return enc


def _camera_feats(batch: int, fine: bool) -> torch.Tensor:
    """(B, 6, 8 [+ 4*FINE], Hf, Wf) random camera features, a stride-8 map folded in when `fine`."""
    hf, wf = IMG[0] // 16, IMG[1] // 16
    return torch.randn(batch, 6, 8 + (4 * FINE if fine else 0), hf, wf)


@pytest.mark.parametrize("layers,depth,fine", [(1, None, False), (2, None, False), (2, DEPTH, False), (2, DEPTH, True)])
def test_inference_fast_path_equals_the_reference(layers, depth, fine):
    """Sampled attention: the cached/in-place inference path gives the reference's output, for two items
    with different calibrations and a missing camera, and again after the weights change (cache refresh);
    with depth-aware attention and a fine level too."""
    enc = _layered_encoder(layers, depth, fine)
    intr, ext = canonical_rig(tiny_config())
    ext2 = ext.clone()
    ext2[:, 2, 3] += 0.3  # the second item's cameras sit higher: another layout
    intr_b, ext_b = torch.stack([intr, intr]), torch.stack([ext, ext2])
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 2] = False
    feats = _camera_feats(2, fine)
    logits = None if depth is None else 3 * torch.randn(2, 6, depth.bins, IMG[0] // 16, IMG[1] // 16)
    for step in range(2):
        with torch.no_grad():
            fast = enc(feats, intr_b, ext_b, mask, logits)
            ref = enc.forward_batched(feats, intr_b, ext_b, mask, logits)
            single = enc(feats[:1], intr_b[:1], ext_b[:1], mask[:1], None if logits is None else logits[:1])
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(single, ref[:1], atol=1e-5, rtol=1e-5)
        assert not fast.equal(torch.zeros_like(fast))
        with torch.no_grad():  # new weights in place (as load_state_dict / an optimiser step would do)
            for p in enc.parameters():
                p.mul_(1.5).add_(0.01)
    assert len(enc._fast) == 2  # one cached entry per calibration


def test_training_uses_the_reference_path_and_backpropagates():
    enc = _layered_encoder()
    intr, ext = canonical_rig(tiny_config())
    feats = torch.randn(1, 6, 8, IMG[0] // 16, IMG[1] // 16, requires_grad=True)
    out = enc(feats, intr[None], ext[None], torch.ones(1, 6, dtype=torch.bool))
    out.square().mean().backward()
    assert feats.grad is not None and enc.queries.grad is not None and not enc._fast


def test_depth_attention_starts_as_plain_attention_and_then_reads_the_depth():
    """The depth-weighted output is zero at initialisation: the encoder computes what it did without it.
    Once it is not, the depth logits change the output and receive a gradient."""
    torch.manual_seed(0)
    plain = _layered_encoder(1)
    deep = BEVEncoder(8, TINY_GRID, IMG, 16, plain.config, DEPTH)
    missing, unexpected = deep.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["layers.0.depth_out.bias", "layers.0.depth_out.weight"] and not unexpected
    intr, ext = canonical_rig(tiny_config())
    feats = torch.randn(1, 6, 8, IMG[0] // 16, IMG[1] // 16)
    mask = torch.ones(1, 6, dtype=torch.bool)
    logits = torch.randn(1, 6, DEPTH.bins, IMG[0] // 16, IMG[1] // 16, requires_grad=True)
    torch.testing.assert_close(deep(feats, intr[None], ext[None], mask, logits), plain(feats, intr[None], ext[None], mask))
    with pytest.raises(ValueError, match="depth_logits"):
        deep(feats, intr[None], ext[None], mask)
    torch.nn.init.normal_(deep.layers[0].depth_out.weight, std=0.3)
    out = deep(feats, intr[None], ext[None], mask, logits)
    out.square().mean().backward()
    assert logits.grad.abs().sum() > 0
    with torch.no_grad():
        assert not deep(feats, intr[None], ext[None], mask, logits.roll(3, dims=2)).equal(out)
    with pytest.raises(ValueError, match="sampled"):
        BEVEncoder(8, TINY_GRID, IMG, 16, BEVEncoderConfig(channels=16, heads=2, attention="dense"), DEPTH)


@torch.no_grad()
def test_fine_level_reads_the_stride8_map_at_each_point():
    """Each point's key and value gain the fine projections of the stride-8 map read at the point's pixel:
    against F.grid_sample of the projected map, camera by camera (the stride-16 part as before)."""
    enc = _layered_encoder(1, fine=True)
    intr, ext = canonical_rig(tiny_config())
    lay = enc.layout(intr, ext)
    fine = torch.randn(6, FINE, IMG[0] // 8, IMG[1] // 8)  # (Ncam, Cs, 2Hf, 2Wf)
    keys, values = enc._fine_points(fine, lay.fine_taps, lay.fine_weights)  # (P, C)
    for proj, got in ((enc.fine_key, keys), (enc.fine_value, values)):
        projected = proj(fine.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (Ncam, C, 2Hf, 2Wf)
        for c in range(6):
            sel = (lay.point_cam == c).nonzero().flatten()
            expected = torch.nn.functional.grid_sample(projected[c : c + 1], lay.point_grid[sel][None, None], align_corners=False)[0, :, 0].T
            torch.testing.assert_close(got[sel], expected, atol=1e-5, rtol=1e-5)
    assert len(lay.point_cell) and lay.fine_weights.sum(1).gt(0.99).float().mean() > 0.5  # most points fall well inside


def test_fine_level_starts_as_the_plain_encoder_and_then_reads_the_fine_map():
    """Zero-initialised projections: weights without the fine level load and compute what they computed,
    whatever the stride-8 map holds. Once trained away from zero, the map changes the output and gets a gradient."""
    plain = _layered_encoder(1)
    fine = BEVEncoder(8, TINY_GRID, IMG, 16, BEVEncoderConfig(**{**plain.config.__dict__, "fine_level": True}), fine_channels=FINE)
    missing, unexpected = fine.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["fine_key.bias", "fine_key.weight", "fine_value.bias", "fine_value.weight"] and not unexpected
    intr, ext = canonical_rig(tiny_config())
    mask = torch.ones(1, 6, dtype=torch.bool)
    feats = _camera_feats(1, True).requires_grad_(True)
    torch.testing.assert_close(fine(feats, intr[None], ext[None], mask), plain(feats[:, :, :8], intr[None], ext[None], mask))
    torch.nn.init.normal_(fine.fine_value.weight, std=0.3)
    out = fine(feats, intr[None], ext[None], mask)
    out.square().mean().backward()
    assert feats.grad[:, :, 8:].abs().sum() > 0
    with torch.no_grad():
        changed = feats.clone()
        changed[:, :, 8:] = torch.randn_like(changed[:, :, 8:])
        assert not fine(changed, intr[None], ext[None], mask).equal(out)
    with pytest.raises(ValueError, match="channels"):
        fine(feats[:, :, :8], intr[None], ext[None], mask)
    with pytest.raises(ValueError, match="channels"):
        plain(feats, intr[None], ext[None], mask)
    with pytest.raises(ValueError, match="sampled"):
        BEVEncoderConfig(attention="dense", fine_level=True)
