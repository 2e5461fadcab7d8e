"""A deterministic numpy ray caster for the simulated cameras: RGB image and semantic labels.

The world is flat and the ego only yaws, so for each camera the ray of every pixel, its hit on
the ground (in the ego frame), the sky and the haze are constant and precomputed once. Per frame:
the ground hits are moved into the map by the ego pose and coloured from the world's top-down
material raster (with a seeded noise texture); then every object part (a few oriented boxes per
agent: body, cabin, wheels, head, ...) and every structure is ray-cast with a slab test inside
its projected screen rectangle, keeping the nearest hit per pixel (a depth buffer; boxes wholly
outside the view frustum are culled first, pixels already nearer than a box are not tested, and
the ground is coloured last, only where no box covers it: all without changing a pixel). Faces are
shaded by a lambertian term of their normal against the world's sun. Single-threaded float32
numpy, so the same state gives byte-identical images; the per-pixel loops are compiled with numba
(replay.sim.render_kernels).
"""
from __future__ import annotations

import numpy as np

from schema.classes import DETECTION_NAMES, DETECTION_TO_SEG, SEG_INDEX
from replay.sim.rig import SensorCalibration
from replay.sim.render_kernels import cast_boxes, clip_near, shade_ground, to_uint8
from replay.sim.slab import BOX_CORNER_SIGNS
from replay.sim.roads import CURB, GRASS, MARK_WHITE, MARK_YELLOW, MATERIAL_SEG, ROAD, SIDEWALK
from replay.sim.world import AgentArrays, World, WorldState

NEAR = 0.1  # metres (camera depth)
FAR = 150.0  # objects beyond this are not drawn
GROUND_FAR = 400.0  # ground beyond this (along the ray) is haze

MATERIAL_RGB = np.zeros((256, 3), np.float32)
MATERIAL_RGB[GRASS] = (88, 112, 58)
MATERIAL_RGB[ROAD] = (84, 84, 87)
MATERIAL_RGB[MARK_WHITE] = (222, 222, 215)
MATERIAL_RGB[MARK_YELLOW] = (218, 176, 48)
MATERIAL_RGB[CURB] = (170, 168, 160)
MATERIAL_RGB[SIDEWALK] = (148, 142, 134)
MATERIAL_NOISE = np.zeros(256, np.float32)  # noise amplitude per material
MATERIAL_NOISE[[GRASS, ROAD, MARK_WHITE, MARK_YELLOW, CURB, SIDEWALK]] = (0.22, 0.10, 0.05, 0.05, 0.06, 0.10)
MATERIAL_LABEL = np.zeros(256, np.uint8)
for _m, _name in enumerate(MATERIAL_SEG):
    MATERIAL_LABEL[_m] = SEG_INDEX[_name]
HAZE = np.array([196, 208, 222], np.float32)
ZENITH = np.array([96, 140, 205], np.float32)

# Parts of each class as fractions of the box: x along l in [-.5, .5], y along w in [-.5, .5],
# z along h in [0, 1]; colour mode 0 body, 1 glass, 2 tyre, 3 dark body, 4 skin, 5 white.
BODY, GLASS, TYRE, DARK, SKIN, WHITE = range(6)
PARTS: dict[str, list[tuple[float, float, float, float, float, float, int]]] = {
    "car": [(-0.5, 0.5, -0.5, 0.5, 0.16, 0.58, BODY), (-0.33, 0.2, -0.45, 0.45, 0.58, 1.0, GLASS),
            (0.22, 0.40, -0.48, 0.48, 0.0, 0.2, TYRE), (-0.40, -0.22, -0.48, 0.48, 0.0, 0.2, TYRE)],
    "truck": [(0.28, 0.5, -0.5, 0.5, 0.15, 0.62, BODY), (0.3, 0.48, -0.47, 0.47, 0.62, 0.85, GLASS),
              (-0.5, 0.26, -0.5, 0.5, 0.2, 1.0, WHITE), (0.3, 0.42, -0.47, 0.47, 0.0, 0.16, TYRE),
              (-0.4, -0.2, -0.47, 0.47, 0.0, 0.16, TYRE)],
    "bus": [(-0.5, 0.5, -0.5, 0.5, 0.1, 0.55, BODY), (-0.48, 0.49, -0.49, 0.49, 0.55, 0.86, GLASS),
            (-0.5, 0.5, -0.5, 0.5, 0.86, 1.0, BODY), (0.28, 0.38, -0.48, 0.48, 0.0, 0.12, TYRE),
            (-0.36, -0.24, -0.48, 0.48, 0.0, 0.12, TYRE)],
    "trailer": [(-0.5, 0.5, -0.5, 0.5, 0.27, 1.0, BODY), (-0.42, -0.22, -0.47, 0.47, 0.0, 0.27, TYRE),
                (0.38, 0.44, -0.1, 0.1, 0.1, 0.27, DARK)],
    "construction_vehicle": [(-0.5, 0.1, -0.5, 0.5, 0.18, 0.55, BODY), (-0.42, 0.02, -0.42, 0.42, 0.55, 1.0, GLASS),
                             (0.1, 0.5, -0.15, 0.15, 0.3, 0.7, DARK), (0.3, 0.5, -0.45, 0.45, 0.05, 0.3, BODY),
                             (-0.45, -0.15, -0.5, 0.5, 0.0, 0.22, TYRE)],
    "pedestrian": [(-0.22, 0.22, -0.3, 0.3, 0.0, 0.47, DARK), (-0.3, 0.3, -0.5, 0.5, 0.47, 0.86, BODY),
                   (-0.17, 0.17, -0.17, 0.17, 0.86, 1.0, SKIN)],
    "bicycle": [(-0.5, 0.5, -0.12, 0.12, 0.0, 0.5, DARK), (-0.25, 0.05, -0.45, 0.45, 0.5, 0.88, BODY),
                (-0.2, 0.0, -0.22, 0.22, 0.88, 1.0, SKIN)],
    "motorcycle": [(-0.5, 0.5, -0.3, 0.3, 0.1, 0.55, BODY), (-0.45, 0.45, -0.2, 0.2, 0.0, 0.25, TYRE),
                   (-0.3, 0.05, -0.5, 0.5, 0.55, 0.88, DARK), (-0.25, 0.0, -0.25, 0.25, 0.88, 1.0, TYRE)],
    "traffic_cone": [(-0.5, 0.5, -0.5, 0.5, 0.0, 0.07, BODY), (-0.32, 0.32, -0.32, 0.32, 0.07, 0.45, BODY),
                     (-0.24, 0.24, -0.24, 0.24, 0.45, 0.68, WHITE), (-0.15, 0.15, -0.15, 0.15, 0.68, 1.0, BODY)],
    "barrier": [(-0.5, 0.5, -0.5, 0.5, 0.0, 0.55, BODY), (-0.45, 0.45, -0.5, 0.5, 0.55, 1.0, WHITE)],
}
# Parked bicycles and motorcycles have no rider: just the frame.
NO_RIDER = [(-0.5, 0.5, -0.2, 0.2, 0.0, 0.75, DARK)]
# Padded part tables indexed by kind (the detection classes, then the riderless cycle).
_KINDS = list(PARTS) + ["no_rider"]
_KIND_INDEX = {k: i for i, k in enumerate(_KINDS)}
_NO_RIDER_KIND = _KIND_INDEX["no_rider"]
_MAXP = max(len(v) for v in list(PARTS.values()) + [NO_RIDER])
_PART_TABLE = np.zeros((len(_KINDS), _MAXP, 7))
_PART_VALID = np.zeros((len(_KINDS), _MAXP), bool)
for _k, _rows in enumerate(list(PARTS.values()) + [NO_RIDER]):
    _PART_TABLE[_k, :len(_rows)] = _rows
    _PART_VALID[_k, :len(_rows)] = True
_CLASS_KIND = np.array([_KIND_INDEX[n] for n in DETECTION_NAMES], np.int64)  # DETECTION_NAMES index -> kind
_KIND_LABEL = np.array([SEG_INDEX[DETECTION_TO_SEG[k]] for k in PARTS] + [SEG_INDEX["cyclist"]], np.uint8)


class _CameraCache:
    """Per-camera constants: pixel rays, ground hits in the ego frame, sky and haze."""

    def __init__(self, cam: SensorCalibration):
        w, h = cam.width, cam.height
        kinv = np.linalg.inv(cam.intrinsic)
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        pix = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)  # (H*W, 3)
        rays_c = pix @ kinv.T  # camera frame, z = 1: t is camera depth
        self.xcol = ((np.arange(w) + 0.5 - cam.intrinsic[0, 2]) / cam.intrinsic[0, 0]).astype(np.float32)
        self.yrow = ((np.arange(h) + 0.5 - cam.intrinsic[1, 2]) / cam.intrinsic[1, 1]).astype(np.float32)
        r_ce = cam.sensor_to_ego.rotation.rotation_matrix
        t_ce = cam.sensor_to_ego.translation
        self.cam_to_ego = cam.sensor_to_ego.matrix
        rays_e = rays_c @ r_ce.T  # ego frame
        self.ray_len = np.linalg.norm(rays_e, axis=1).astype(np.float32)
        dz = rays_e[:, 2]
        tg = np.where(dz < -1e-9, -t_ce[2] / np.minimum(dz, -1e-9), np.inf)
        ground = np.isfinite(tg) & (tg * self.ray_len < GROUND_FAR)
        self.ground_idx = np.flatnonzero(ground)
        gxy = t_ce[:2] + tg[ground, None] * rays_e[ground, :2]  # (G, 2) ground hits, ego frame
        self.ground_x, self.ground_y = gxy[:, 0].astype(np.float32), gxy[:, 1].astype(np.float32)
        dist = tg[ground] * self.ray_len[ground]
        fog = np.clip((dist - 40.0) / 400.0, 0.0, 0.75).astype(np.float32)
        self.ground_keep = 1.0 - fog  # (G,) share of the surface colour
        self.ground_haze = (fog[:, None] * HAZE).astype(np.float32)  # (G, 3) haze added
        # sky gradient and far haze; labels sky / background
        elev = np.arcsin(np.clip(dz / np.linalg.norm(rays_e, axis=1), -1, 1))
        k = np.clip(elev / 0.6, 0, 1)[:, None]
        base = HAZE * (1 - k) + ZENITH * k
        self.base_rgb = base.astype(np.float32)
        self.base_label = np.where(dz >= 0, SEG_INDEX["sky"], SEG_INDEX["background"]).astype(np.uint8)
        self.base_depth = np.full(w * h, np.inf, np.float32)
        self.base_depth[self.ground_idx] = tg[ground].astype(np.float32)
        self.w, self.h = w, h
        self.k = np.asarray(cam.intrinsic, np.float64)
        # view frustum (camera frame): unit inward normals and offsets of the near, left, right, top
        # and bottom planes; a point p is inside all when planes @ p >= offsets
        k = self.k
        xmin, xmax = -k[0, 2] / k[0, 0], (w - k[0, 2]) / k[0, 0]
        ymin, ymax = -k[1, 2] / k[1, 1], (h - k[1, 2]) / k[1, 1]
        planes = np.array([[0, 0, 1], [1, 0, -xmin], [-1, 0, xmax], [0, 1, -ymin], [0, -1, ymax]], np.float64)
        norm = np.linalg.norm(planes, axis=1)
        self.planes, self.plane_offsets = planes / norm[:, None], np.array([NEAR, 0, 0, 0, 0]) / norm


class Renderer:
    """Renders a WorldState through one camera: ((H, W, 3) uint8 RGB, (H, W) uint8 SEG_CLASSES labels)."""

    def __init__(self, world: World, width: int = 800, height: int = 450):
        self.world, self.width, self.height = world, int(width), int(height)
        self._cams: dict[tuple, _CameraCache] = {}
        self._cam_ids: dict[int, tuple[SensorCalibration, _CameraCache]] = {}
        rng = np.random.default_rng(np.random.SeedSequence([world.seed, 0x7E47]))
        fine = rng.uniform(-1, 1, (1024, 1024)).astype(np.float32)
        coarse = np.kron(rng.uniform(-1, 1, (32, 32)).astype(np.float32), np.ones((32, 32), np.float32))
        self.noise = (0.6 * fine + 0.4 * coarse).ravel()  # (1024*1024,) tiled every 102 m at 0.1 m/px
        self.sun = world.sun.astype(np.float64)
        self._parts_key: tuple | None = None
        self._parts = None
        s = world.structures
        self._struct = self._make_parts(
            s.boxes[:, :3], s.boxes[:, 6], np.stack([s.boxes[:, 4], s.boxes[:, 3], s.boxes[:, 5]], axis=1),
            np.ones(len(s.boxes), np.int64) * SEG_INDEX["structure"], s.colors.astype(np.float64))

    # ---- geometry ------------------------------------------------------------------------------------
    def _make_parts(self, centers, yaws, half_or_full, labels, colors):
        """Whole boxes as parts: centres (P, 3), yaws (P,), full sizes (l, w, h) (P, 3) -> part arrays."""
        n = len(centers)
        shade = self._face_shades(yaws, colors)
        return dict(center=np.asarray(centers, np.float64).reshape(n, 3), yaw=np.asarray(yaws, np.float64),
                    half=np.asarray(half_or_full, np.float64).reshape(n, 3) / 2, label=labels.astype(np.uint8),
                    shade=shade)

    def _face_shades(self, yaws: np.ndarray, colors: np.ndarray) -> np.ndarray:
        """(P, 6, 3) float32 colour of each face (-x, +x, -y, +y, -z, +z) lit by the sun."""
        c, s = np.cos(yaws), np.sin(yaws)
        nx = np.stack([c, s, np.zeros_like(c)], axis=1)
        ny = np.stack([-s, c, np.zeros_like(c)], axis=1)
        nz = np.tile([0.0, 0.0, 1.0], (len(yaws), 1))
        normals = np.stack([-nx, nx, -ny, ny, -nz, nz], axis=1)  # (P, 6, 3)
        lam = np.clip(normals @ self.sun, 0, None)
        f = 0.42 + 0.62 * lam
        return (colors[:, None, :] * f[..., None]).astype(np.float32)

    def _agent_parts(self, state: WorldState):
        """Global part boxes of every agent of a state (cached for the last state), vectorised."""
        key = (id(state), state.time_s)
        if self._parts_key == key:
            return self._parts
        parts = None
        arrays = getattr(state, "agent_arrays", None)  # a LightState carries them ready-made
        if arrays is None and state.agents:
            arrays = AgentArrays.of(state.agents)
        if arrays is not None and len(arrays.class_index):
            n = len(arrays.class_index)
            kind = np.where(arrays.without_rider, _NO_RIDER_KIND, _CLASS_KIND[arrays.class_index])
            wlh, ctr, yaw, col = arrays.size, arrays.center, arrays.yaw, arrays.color  # (n, 3), (n, 3), (n,), (n, 3)
            tab = _PART_TABLE[kind]  # (n, MAXP, 7)
            valid = _PART_VALID[kind]  # (n, MAXP)
            w, l, h = wlh[:, 0:1], wlh[:, 1:2], wlh[:, 2:3]
            lx = (tab[..., 0] + tab[..., 1]) / 2 * l
            ly = (tab[..., 2] + tab[..., 3]) / 2 * w
            lz = (tab[..., 4] + tab[..., 5]) / 2 * h
            cy, sy = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
            center = np.stack([ctr[:, 0:1] + cy * lx - sy * ly, ctr[:, 1:2] + sy * lx + cy * ly,
                               ctr[:, 2:3] - h / 2 + lz], axis=-1)
            half = np.stack([(tab[..., 1] - tab[..., 0]) * l, (tab[..., 3] - tab[..., 2]) * w,
                             (tab[..., 5] - tab[..., 4]) * h], axis=-1) / 2
            modes = np.stack([col, np.broadcast_to([38.0, 46, 56], (n, 3)), np.broadcast_to([22.0, 22, 24], (n, 3)),
                              col * 0.45 + 10, np.broadcast_to([205.0, 165, 135], (n, 3)),
                              np.broadcast_to([232.0, 232, 228], (n, 3))], axis=1)  # (n, 6, 3)
            colors = np.take_along_axis(modes, tab[..., 6].astype(np.int64)[..., None], axis=1)  # (n, MAXP, 3)
            labels = np.broadcast_to(_KIND_LABEL[kind][:, None], valid.shape)
            yaws = np.broadcast_to(yaw[:, None], valid.shape)
            parts = dict(center=center[valid], yaw=yaws[valid], half=half[valid], label=labels[valid].astype(np.uint8),
                         shade=self._face_shades(yaws[valid], colors[valid]))
        self._parts_key, self._parts = key, parts
        return parts

    def _camera(self, cam: SensorCalibration) -> _CameraCache:
        hit = self._cam_ids.get(id(cam))  # the same (frozen) calibration object as before: no key to build
        if hit is not None and hit[0] is cam:
            return hit[1]
        if cam.intrinsic is None:
            raise ValueError(f"{cam.channel} is not a camera (no intrinsics)")
        if (cam.width, cam.height) != (self.width, self.height):
            raise ValueError(f"{cam.channel} is calibrated for {cam.width}x{cam.height} but this renderer "
                             f"renders {self.width}x{self.height}; use camera_rig({self.width}, {self.height})")
        key = (cam.channel, cam.width, cam.height, np.asarray(cam.intrinsic).tobytes(),
               cam.sensor_to_ego.translation.tobytes(), cam.sensor_to_ego.rotation.elements.tobytes())
        cc = self._cams.get(key)
        if cc is None:
            cc = self._cams[key] = _CameraCache(cam)
        self._cam_ids[id(cam)] = (cam, cc)  # holds cam, so its id is not reused while cached
        return cc

    # ---- rendering -----------------------------------------------------------------------------------
    def render(self, state: WorldState, camera: SensorCalibration) -> tuple[np.ndarray, np.ndarray]:
        """RGB (H, W, 3) uint8 and labels (H, W) uint8 (index into SEG_CLASSES) of one camera."""
        cc = self._camera(camera)
        rgb = cc.base_rgb.copy()  # (H*W, 3) float32
        label = cc.base_label.copy()  # (H*W,) uint8
        depth = cc.base_depth.copy()  # (H*W,) camera depth
        cam_to_global = state.ego_pose.matrix @ cc.cam_to_ego
        global_to_cam = np.eye(4)
        global_to_cam[:3, :3] = cam_to_global[:3, :3].T
        global_to_cam[:3, 3] = -cam_to_global[:3, :3].T @ cam_to_global[:3, 3]
        origin = cam_to_global[:3, 3]
        rgb2, label2, depth2 = rgb.reshape(cc.h, cc.w, 3), label.reshape(cc.h, cc.w), depth.reshape(cc.h, cc.w)
        self._boxes([self._struct, self._agent_parts(state)], global_to_cam, origin, cc, rgb2, label2, depth2)
        # the ground after the boxes, only where no box was hit (nearer than the ground): the boxes'
        # depth test starts from the ground's depth, not its colour, so the image is the same
        self._ground(state, cc, rgb, label, depth)
        img = to_uint8(rgb2)
        return img, label2

    def _ground(self, state: WorldState, cc: _CameraCache, rgb: np.ndarray, label: np.ndarray,
                depth: np.ndarray) -> None:
        """Shade the ground pixels whose depth is still the ground's (H*W buffers)."""
        g = self.world.ground
        yaw = state.ego_pose.yaw
        tx, ty = (state.ego_pose.translation[:2] - g.origin) / g.resolution
        inv_res = 1.0 / g.resolution
        shade_ground(cc.ground_idx, cc.ground_x, cc.ground_y, np.cos(yaw) * inv_res, np.sin(yaw) * inv_res,
                     float(tx), float(ty), g.material, self.noise, MATERIAL_RGB, MATERIAL_NOISE, MATERIAL_LABEL,
                     cc.ground_keep, cc.ground_haze, rgb, label, depth, cc.base_depth)

    def _boxes(self, part_sets, global_to_cam, origin, cc, rgb, label, depth) -> None:
        """Ray-cast every part box near the camera into the (H, W) buffers, nearest first."""
        part_sets = [p for p in part_sets if p is not None and len(p["center"])]
        if not part_sets:
            return
        center = np.concatenate([p["center"] for p in part_sets])
        yaw = np.concatenate([p["yaw"] for p in part_sets])
        half = np.concatenate([p["half"] for p in part_sets])
        labels = np.concatenate([p["label"] for p in part_sets])
        shade = np.concatenate([p["shade"] for p in part_sets])
        near = ((center[:, :2] - origin[:2]) ** 2).sum(axis=1) < (FAR + half.max(axis=1)) ** 2
        # frustum culling (conservative: bounding spheres, 1 cm margin): a box wholly outside one
        # plane gets an empty screen rectangle below, so dropping it here changes no pixel
        rad = np.sqrt((half * half).sum(axis=1)) + 0.01
        pc = (center - origin) @ global_to_cam[:3, :3].T  # (P, 3) camera frame
        near &= ((pc @ cc.planes.T - cc.plane_offsets) >= -rad[:, None]).all(axis=1)
        idx = np.flatnonzero(near)
        if len(idx) == 0:
            return
        r_cg, t_cg = global_to_cam[:3, :3], global_to_cam[:3, 3]
        cy, sy = np.cos(yaw[idx]), np.sin(yaw[idx])
        zero, one = np.zeros_like(cy), np.ones_like(cy)
        r_gb = np.stack([np.stack([cy, -sy, zero], 1), np.stack([sy, cy, zero], 1), np.stack([zero, zero, one], 1)], 1)
        r_cb = np.einsum("ij,pjk->pik", r_cg, r_gb)  # (P, 3, 3) box -> camera
        c_c = center[idx] @ r_cg.T + t_cg  # (P, 3)
        corners = c_c[:, None, :] + np.einsum("pij,pcj->pci", r_cb, BOX_CORNER_SIGNS[None, :, :] * half[idx][:, None, :])
        z = corners[..., 2]  # (P, 8)
        zmin, zmax = z.min(axis=1), z.max(axis=1)
        k, w, h = cc.k, cc.w, cc.h
        # screen rectangles: all boxes in front at once, boxes across the near plane one by one
        zc = np.maximum(z, NEAR)
        u = corners[..., 0] / zc * k[0, 0] + k[0, 2]
        v = corners[..., 1] / zc * k[1, 1] + k[1, 2]
        rect = np.stack([u.min(1), v.min(1), u.max(1), v.max(1)], axis=1)
        for j in np.flatnonzero((zmin <= NEAR) & (zmax > NEAR)):
            pts = clip_near(corners[j], NEAR)
            uu = pts[:, 0] / pts[:, 2] * k[0, 0] + k[0, 2]
            vv = pts[:, 1] / pts[:, 2] * k[1, 1] + k[1, 2]
            rect[j] = (uu.min(), vv.min(), uu.max(), vv.max())
        x0 = np.clip(np.floor(rect[:, 0]), 0, w).astype(int)
        y0 = np.clip(np.floor(rect[:, 1]), 0, h).astype(int)
        x1 = np.clip(np.ceil(rect[:, 2]), 0, w).astype(int)
        y1 = np.clip(np.ceil(rect[:, 3]), 0, h).astype(int)
        vis = np.flatnonzero((zmax > NEAR) & (x1 > x0) & (y1 > y0))
        vis = vis[np.argsort(zmin[vis], kind="stable")]  # nearest first: hidden boxes get culled
        vis = vis.astype(np.int64)
        rects = np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)
        r_cb32 = r_cb.astype(np.float32)
        orig = -np.einsum("pji,pj->pi", r_cb, c_c).astype(np.float32)  # camera centre in each box frame
        cast_boxes(vis, rects, r_cb32, orig, half[idx].astype(np.float32), zmin.astype(np.float32),
                   shade[idx], labels[idx], cc.xcol, cc.yrow, cc.ray_len.reshape(h, w), depth, rgb, label,
                   np.float32(NEAR), HAZE)


def render_labels_reference(renderer: Renderer, state: WorldState, camera: SensorCalibration) -> tuple[np.ndarray, np.ndarray]:
    """Slow, obvious numpy reference of the label image and camera depth, for tests and the benchmark.

    Every pixel ray is intersected in float64 with the ground plane and with every part box near
    the camera (a full-image slab test per box, no screen rectangles, no culling by occlusion).
    Returns ((H, W) uint8 labels, (H, W) float64 camera depth, inf for sky).
    """
    cc = renderer._camera(camera)
    g = renderer.world.ground
    u, v = np.meshgrid(np.arange(cc.w) + 0.5, np.arange(cc.h) + 0.5)
    rays_c = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(cc.k).T  # z = 1
    cam_to_global = state.ego_pose.matrix @ cc.cam_to_ego
    rot, origin = cam_to_global[:3, :3], cam_to_global[:3, 3]
    rays = rays_c @ rot.T  # (N, 3) global directions
    label = np.where(rays[:, 2] >= 0, SEG_INDEX["sky"], SEG_INDEX["background"]).astype(np.uint8)
    depth = np.full(len(rays), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.where(rays[:, 2] < 0, -origin[2] / rays[:, 2], np.inf)
    ground = np.isfinite(tg) & (tg * np.linalg.norm(rays, axis=1) < GROUND_FAR)
    pts = origin[:2] + tg[ground, None] * rays[ground, :2]
    ij = np.floor((pts - g.origin) / g.resolution).astype(np.int64)
    ij[:, 0] = np.clip(ij[:, 0], 0, g.material.shape[1] - 1)
    ij[:, 1] = np.clip(ij[:, 1], 0, g.material.shape[0] - 1)
    label[ground] = MATERIAL_LABEL[g.material[ij[:, 1], ij[:, 0]]]
    depth[ground] = tg[ground]
    for parts in (renderer._struct, renderer._agent_parts(state)):
        if parts is None:
            continue
        for c, yaw, half, lab in zip(parts["center"], parts["yaw"], parts["half"], parts["label"]):
            if ((c[:2] - origin[:2]) ** 2).sum() >= (FAR + half.max()) ** 2:
                continue
            cy, sy = np.cos(yaw), np.sin(yaw)
            r_gb = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
            o = r_gb.T @ (origin - c)
            d = rays @ r_gb  # rows: r_gb.T @ ray
            with np.errstate(divide="ignore", invalid="ignore"):
                t1, t2 = (-half - o) / d, (half - o) / d
            tn = np.nanmax(np.minimum(t1, t2), axis=1)
            tf = np.nanmin(np.maximum(t1, t2), axis=1)
            hit = (tn <= tf) & (tn > NEAR) & (tn < depth)
            depth[hit], label[hit] = tn[hit], lab
    return label.reshape(cc.h, cc.w), depth.reshape(cc.h, cc.w)
