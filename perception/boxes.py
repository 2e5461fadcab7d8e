"""3D box layout, anchor-relative box coding, and BEV overlap of box sets.

Box layout (ego frame, nuScenes conventions): (x, y, z, w, l, h, yaw, vx, vy). (x, y, z) is the box
centre, w the extent across the heading (box y axis), l along the heading (box x axis), h vertical;
yaw is the heading about +z from +x; (vx, vy) the object's velocity expressed in ego axes.

Coding (SECOND/PointPillars style; the lecture's t_x=(x-x_a)/w_a with the BEV diagonal as the scale so
that x and y share one scale on rotated anchors):
    d_a = sqrt(w_a^2 + l_a^2)
    t_x = (x - x_a)/d_a, t_y = (y - y_a)/d_a, t_z = (z - z_a)/h_a,
    t_w = log(w/w_a), t_l = log(l/l_a), t_h = log(h/h_a),
    t_sin = sin(yaw - yaw_a), t_cos = cos(yaw - yaw_a),          (full 2*pi heading, no direction bin)
    t_vx = vx / velocity_scale, t_vy = vy / velocity_scale.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

BOX_DIM = 9  # x, y, z, w, l, h, yaw, vx, vy
ANCHOR_DIM = 7  # x, y, z, w, l, h, yaw
CODE_SIZE = 10  # tx, ty, tz, tw, tl, th, sin, cos, tvx, tvy


def _check_last(name: str, t: Tensor, dim: int) -> None:
    if t.shape[-1] != dim:
        raise ValueError(f"{name}: expected last dimension {dim}, got shape {tuple(t.shape)}")


def wrap_angle(a: Tensor) -> Tensor:
    """Angles wrapped to [-pi, pi)."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def encode_boxes(boxes: Tensor, anchors: Tensor, velocity_scale: float = 1.0) -> Tensor:
    """(..., 9) boxes and (..., 7) anchors -> (..., 10) regression targets (see module docstring)."""
    _check_last("encode_boxes boxes", boxes, BOX_DIM)
    _check_last("encode_boxes anchors", anchors, ANCHOR_DIM)
    xa, ya, za, wa, la, ha, ra = anchors.unbind(-1)
    x, y, z, w, l, h, r, vx, vy = boxes.unbind(-1)
    da = torch.sqrt(wa * wa + la * la)
    return torch.stack(
        (
            (x - xa) / da,
            (y - ya) / da,
            (z - za) / ha,
            torch.log(w / wa),
            torch.log(l / la),
            torch.log(h / ha),
            torch.sin(r - ra),
            torch.cos(r - ra),
            vx / velocity_scale,
            vy / velocity_scale,
        ),
        dim=-1,
    )


def decode_boxes(deltas: Tensor, anchors: Tensor, velocity_scale: float = 1.0) -> Tensor:
    """(..., 10) deltas and (..., 7) anchors -> (..., 9) boxes, yaw wrapped to [-pi, pi); inverse of encode_boxes."""
    _check_last("decode_boxes deltas", deltas, CODE_SIZE)
    _check_last("decode_boxes anchors", anchors, ANCHOR_DIM)
    xa, ya, za, wa, la, ha, ra = anchors.unbind(-1)
    tx, ty, tz, tw, tl, th, ts, tc, tvx, tvy = deltas.unbind(-1)
    da = torch.sqrt(wa * wa + la * la)
    return torch.stack(
        (
            tx * da + xa,
            ty * da + ya,
            tz * ha + za,
            torch.exp(tw) * wa,
            torch.exp(tl) * la,
            torch.exp(th) * ha,
            wrap_angle(torch.atan2(ts, tc) + ra),
            tvx * velocity_scale,
            tvy * velocity_scale,
        ),
        dim=-1,
    )


def bev_corners(boxes: Tensor) -> Tensor:
    """(..., >=7) boxes -> (..., 4, 2) BEV corners (x, y), counter-clockwise."""
    x, y, w, l, yaw = boxes[..., 0], boxes[..., 1], boxes[..., 3], boxes[..., 4], boxes[..., 6]
    c, s = torch.cos(yaw), torch.sin(yaw)
    # box-frame corners: (+l/2, +w/2), (-l/2, +w/2), (-l/2, -w/2), (+l/2, -w/2) is CCW
    sx = boxes.new_tensor([0.5, -0.5, -0.5, 0.5])
    sy = boxes.new_tensor([0.5, 0.5, -0.5, -0.5])
    px = sx * l[..., None]
    py = sy * w[..., None]
    cx = c[..., None] * px - s[..., None] * py + x[..., None]
    cy = s[..., None] * px + c[..., None] * py + y[..., None]
    return torch.stack((cx, cy), dim=-1)


def nearest_bev_rects(boxes: Tensor) -> Tensor:
    """(..., >=7) boxes -> (..., 4) axis-aligned (x1, y1, x2, y2) of each box snapped to its nearest axis.

    SECOND's 'nearest BEV' approximation: a box within 45 deg of the y axis swaps w and l.
    Exact for yaw in {0, pi/2, pi, ...}; used for anchor assignment where speed matters.
    """
    x, y, w, l, yaw = boxes[..., 0], boxes[..., 1], boxes[..., 3], boxes[..., 4], boxes[..., 6]
    r = torch.remainder(yaw + math.pi / 4, math.pi)  # in [0, pi): < pi/2 means nearer the x axis
    along_x = r < math.pi / 2
    ex = torch.where(along_x, l, w) / 2  # extent along ego x
    ey = torch.where(along_x, w, l) / 2
    return torch.stack((x - ex, y - ey, x + ex, y + ey), dim=-1)


def axis_aligned_iou(a: Tensor, b: Tensor) -> Tensor:
    """(N, 4) and (M, 4) rectangles (x1, y1, x2, y2) -> (N, M) IoU."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-12)


def _cross2(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _points_in_convex(points: Tensor, poly: Tensor) -> Tensor:
    """points (..., P, 2), CCW poly (..., 4, 2) -> (..., P) bool, inside or on the boundary."""
    edges = poly.roll(-1, dims=-2) - poly  # (..., 4, 2)
    rel = points[..., :, None, :] - poly[..., None, :, :]  # (..., P, 4, 2)
    return (_cross2(edges[..., None, :, :].expand_as(rel), rel) >= -1e-9).all(-1)


def rotated_bev_iou_pairwise(a: Tensor, b: Tensor) -> Tensor:
    """(K, >=7) and (K, >=7) boxes -> (K,) exact BEV IoU of the rotated footprints, element-wise.

    Intersection polygon = corners of each box inside the other plus edge-edge crossings, ordered by
    angle about their mean and summed with the shoelace formula.
    """
    ca, cb = bev_corners(a), bev_corners(b)  # (K, 4, 2)
    ea, eb = ca.roll(-1, dims=-2) - ca, cb.roll(-1, dims=-2) - cb
    # edge i of a against edge j of b: p + t r = q + u s
    p, r = ca[:, :, None, :], ea[:, :, None, :]  # (K, 4, 1, 2)
    q, s = cb[:, None, :, :], eb[:, None, :, :]  # (K, 1, 4, 2)
    denom = _cross2(r.expand(-1, 4, 4, 2), s.expand(-1, 4, 4, 2))
    qp = q - p
    safe = torch.where(denom.abs() < 1e-12, torch.ones_like(denom), denom)
    t = _cross2(qp, s.expand_as(qp)) / safe
    u = _cross2(qp, r.expand_as(qp)) / safe
    cross_ok = (denom.abs() >= 1e-12) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    cross_pts = (p + t[..., None] * r).reshape(-1, 16, 2)
    pts = torch.cat((ca, cb, cross_pts), dim=1)  # (K, 24, 2)
    valid = torch.cat((_points_in_convex(ca, cb), _points_in_convex(cb, ca), cross_ok.reshape(-1, 16)), dim=1)
    n_valid = valid.sum(1)
    vf = valid.to(pts.dtype)
    centre = (pts * vf[..., None]).sum(1) / n_valid.clamp(min=1)[:, None].to(pts.dtype)
    ang = torch.atan2(pts[..., 1] - centre[:, None, 1], pts[..., 0] - centre[:, None, 0])
    ang = torch.where(valid, ang, torch.full_like(ang, 10.0))  # invalid points sort last
    order = ang.argsort(dim=1)
    sp = torch.gather(pts, 1, order[..., None].expand(-1, -1, 2))
    sv = torch.gather(valid, 1, order)
    sp = torch.where(sv[..., None], sp, sp[:, :1, :])  # invalid -> first point: zero-area repeats
    inter = 0.5 * _cross2(sp, sp.roll(-1, dims=1)).sum(1).abs()
    inter = torch.where(n_valid >= 3, inter, torch.zeros_like(inter))
    area_a = a[:, 3] * a[:, 4]
    area_b = b[:, 3] * b[:, 4]
    return inter / (area_a + area_b - inter).clamp(min=1e-12)


def rotated_bev_iou(a: Tensor, b: Tensor) -> Tensor:
    """(N, >=7) and (M, >=7) boxes -> (N, M) exact rotated BEV IoU (all pairs)."""
    n, m = a.shape[0], b.shape[0]
    out = a.new_zeros((n, m))
    if n == 0 or m == 0:
        return out
    # only pairs whose circumscribed circles meet can overlap: clip polygons for those alone
    ra = 0.5 * torch.hypot(a[:, 3], a[:, 4])
    rb = 0.5 * torch.hypot(b[:, 3], b[:, 4])
    near = torch.cdist(a[:, :2], b[:, :2]) < ra[:, None] + rb[None, :]  # (N, M)
    ia, ib = torch.nonzero(near, as_tuple=True)
    if ia.numel():
        out[ia, ib] = rotated_bev_iou_pairwise(a[ia, :7], b[ib, :7])
    return out
