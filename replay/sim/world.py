"""The procedural simulated world: roads, structures and traffic, deterministic by seed.

`World(seed)` builds the static map (replay.sim.roads) and the agents (replay.sim.traffic) from one numpy
Generator; `state_at(t)` returns every agent near the ego and the ego's pose and motion at time t
(seconds from the scene start); `light_state_at(t)` / `light_states_at(times)` give the same
state with the agents as arrays (AgentArrays, for the live renderer: no object per agent).
Coordinates are global map metres, positive (like nuScenes maps);
the ego origin is on the ground below the rear axle, x forward, y left, z up.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from pyquaternion import Quaternion

from schema.classes import DETECTION_NAMES
from replay.sim.config import WorldConfig
from replay.sim.roads import (GroundRaster, Intersection, Polyline, Road, Structures, build_raster, build_roads,
                          find_intersections, place_structures, road_polylines)
from replay.sim.agent_specs import CLASS_SPECS, EGO_FRONT
from replay.sim.traffic import Traffic
from schema.messages import EgoKinematics, Pose

__all__ = ["WorldConfig", "Polyline", "AgentState", "WorldState", "World", "yaw_quaternion", "AgentArrays",
           "LightState"]


def yaw_quaternion(yaw: float) -> Quaternion:
    """Rotation about +z by yaw radians.

    Built without pyquaternion's argument validation (a pyquaternion Quaternion is just its `q`
    array), which is the hot spot of state_at with a few hundred agents per call.
    """
    q = Quaternion.__new__(Quaternion)
    q.q = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
    return q


@dataclass(frozen=True)
class AgentState:
    """One annotated object at one time (nuScenes conventions)."""

    instance_id: str  # stable for the agent's whole life
    category: str  # nuScenes category name, e.g. 'vehicle.car'
    detection_name: str  # one of schema.classes.DETECTION_NAMES
    size: np.ndarray  # (3,) w, l, h metres (nuScenes order)
    center: np.ndarray  # (3,) global, box centre (z = h/2 on flat ground)
    rotation: Quaternion  # yaw about global z
    velocity: np.ndarray  # (3,) global m/s
    attribute: str  # nuScenes attribute name, '' for cones/barriers
    color: tuple[int, int, int]

    @property
    def yaw(self) -> float:
        return float(2 * np.arctan2(self.rotation.z, self.rotation.w))


@dataclass(frozen=True)
class WorldState:
    """The world at one time: the ego and the agents within `agent_radius` of it."""

    time_s: float
    ego_pose: Pose  # ego -> global
    ego_velocity: np.ndarray  # (3,) global m/s
    ego_acceleration: np.ndarray  # (3,) global m/s^2
    ego_yaw_rate: float  # rad/s
    agents: tuple[AgentState, ...]

    def ego_kinematics(self) -> EgoKinematics:
        """Velocity and acceleration rotated into the ego frame, with the yaw rate."""
        inv = self.ego_pose.rotation.inverse
        return EgoKinematics(inv.rotate(self.ego_velocity), inv.rotate(self.ego_acceleration), float(self.ego_yaw_rate))


class World:
    """A procedural town and its traffic, a pure function of (seed, config)."""

    def __init__(self, seed: int, config: WorldConfig | None = None):
        self.seed = int(seed)
        self.config = cfg = config or WorldConfig()
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xB3E5]))
        self.roads: list[Road] = build_roads(rng, cfg)
        allp = np.concatenate([r.points for r in self.roads])
        m = cfg.map_margin
        lo = allp.min(axis=0) - m
        hi = allp.max(axis=0) + m
        self._bounds = (float(max(lo[0], 0.0)), float(max(lo[1], 0.0)), float(hi[0]), float(hi[1]))
        self.intersections: list[Intersection] = find_intersections(rng, self.roads, cfg)
        self.road_geometry: tuple[Polyline, ...] = road_polylines(self.roads)
        self.structures: Structures = place_structures(rng, self.roads, cfg, self._bounds)
        self.traffic = Traffic(rng, self.roads, self.intersections, cfg)
        self.sun = np.array([0.35, -0.5, 0.8]) + rng.normal(0, 0.1, 3)
        self.sun /= np.linalg.norm(self.sun)
        self._raster: GroundRaster | None = None
        self._id_prefix = hashlib.sha1(f"bevstream-world-{self.seed}".encode()).hexdigest()[:12]
        self._cache: tuple[float, WorldState] | None = None
        self._iids: dict[tuple, str] = {}
        self._statics: dict[int, AgentState] = {}
        tr = self.traffic  # flat body tables: driver index, body index, distance back from the front bumper
        flat = [(i, bi, b.back) for i, bodies in enumerate(tr.d_bodies) for bi, b in enumerate(bodies)]
        self._body_driver = np.array([f[0] for f in flat], int)
        self._body_index = np.array([f[1] for f in flat], int)
        self._body_back = np.array([f[2] for f in flat], float)
        self._body_lane = tr.d_lane[self._body_driver]
        self._static_xy = np.array([st.center[:2] for st in tr.statics]).reshape(-1, 2)
        self._lane_bodies = [np.flatnonzero(self._body_lane == k) for k in range(len(tr.lanes))]
        self._walk_peds = [np.flatnonzero(tr.p_path == k) for k in range(len(tr.walks))]
        self._snaps: list[_Snapshot] = []  # the last batch of snapshots
        self._prepare_arrays()

    # ---- static ----------------------------------------------------------------------------------
    def bounds(self) -> tuple[float, float, float, float]:
        """xmin, ymin, xmax, ymax of the map (global metres)."""
        return self._bounds

    @property
    def ground(self) -> GroundRaster:
        """Top-down material raster of the ground (built on first use: it takes a few seconds)."""
        if self._raster is None:
            self._raster = build_raster(self.roads, self._bounds, self.config)
        return self._raster

    # ---- dynamic ---------------------------------------------------------------------------------
    def _iid(self, kind: str, index: int, lap: int = 0) -> str:
        key = (kind, index, lap)
        iid = self._iids.get(key)
        if iid is None:
            iid = self._iids[key] = f"{self._id_prefix}-{kind}{index:05d}-{lap:03d}"
        return iid

    def _static_state(self, k: int) -> AgentState:
        """Static agents never change: build each AgentState once."""
        a = self._statics.get(k)
        if a is None:
            st = self.traffic.statics[k]
            a = self._statics[k] = AgentState(self._iid("s", k), st.category, st.name, st.size, st.center.copy(),
                                              yaw_quaternion(st.yaw), np.zeros(3), st.attribute, st.color)
        return a

    def _snapshot(self, t: float) -> "_Snapshot":
        """Ego and agents near it at t as arrays (shared by state_at and light_state_at)."""
        for sn in self._snaps:
            if sn.time_s == t:
                return sn
        return self._snapshots([t])[0]

    def _snapshots(self, times) -> list["_Snapshot"]:
        """_snapshot of several times at once: each path is sampled once for all of them (np.interp
        and friends are elementwise, so every value is the same as for one time alone)."""
        ts = [float(t) for t in times]
        m = len(ts)
        cfg, tr = self.config, self.traffic
        drv = [tr.drivers_at(t) for t in ts]  # (s_front, v, a, lap) per time
        # ego
        e = tr.ego
        epath = tr.lanes[tr.d_lane[e]][0]
        p, th, kappa = epath.sample(np.array([d[0][e] - EGO_FRONT for d in drv]))
        ego_xy = [p[i] for i in range(m)]
        r2 = cfg.agent_radius ** 2
        # drivers and their bodies, sampled lane by lane
        body_s = [d[0][self._body_driver] - self._body_back for d in drv]
        d_sel, d_xy, d_h = ([[] for _ in ts] for _ in range(3))
        for k, sel0 in enumerate(self._lane_bodies):
            if len(sel0) == 0:
                continue
            path = tr.lanes[k][0]
            sels, scs = [], []
            for i in range(m):
                sel, sc = sel0, body_s[i][sel0]
                if not path.closed:  # bodies on the hidden return stretch of an open lane are absent
                    keep = (sc >= 0.0) & (sc <= path.length)
                    sel, sc = sel[keep], sc[keep]
                sels.append(sel), scs.append(sc)
            q_all, h_all, _ = path.sample(np.concatenate(scs))
            o = 0
            for i, sel in enumerate(sels):
                q, h = q_all[o:o + len(sel)], h_all[o:o + len(sel)]
                o += len(sel)
                near = ((q - ego_xy[i]) ** 2).sum(axis=1) <= r2
                d_sel[i].append(sel[near]), d_xy[i].append(q[near]), d_h[i].append(h[near])
        # pedestrians, sampled path by path
        wk = [tr.walkers_at(t) for t in ts]  # (s, signed speed, direction) per time
        p_sel, p_xy, p_h = ([[] for _ in ts] for _ in range(3))
        for k, path in enumerate(tr.walks):
            sel = self._walk_peds[k]
            if len(sel) == 0:
                continue
            q_all, h_all, _ = path.sample(np.concatenate([w[0][sel] for w in wk]))
            lat = np.tile(tr.p_lat[sel], m)
            xy_all = q_all + lat[:, None] * np.stack([-np.sin(h_all), np.cos(h_all)], axis=1)
            n = len(sel)
            for i in range(m):
                xy, h = xy_all[i * n:(i + 1) * n], h_all[i * n:(i + 1) * n]
                near = ((xy - ego_xy[i]) ** 2).sum(axis=1) <= r2
                p_sel[i].append(sel[near]), p_xy[i].append(xy[near]), p_h[i].append(h[near])
        cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape)  # noqa: E731
        snaps = []
        for i, t in enumerate(ts):
            s_front, v, a, lap = drv[i]
            yaw, ve, ae, kap = float(th[i]), float(v[e]), float(a[e]), float(kappa[i])
            fwd, left = np.array([np.cos(yaw), np.sin(yaw), 0.0]), np.array([-np.sin(yaw), np.cos(yaw), 0.0])
            psel = cat(p_sel[i], (0,)).astype(int)
            ph = cat(p_h[i], (0,))
            ph = ph + np.where(wk[i][2][psel] < 0, np.pi, 0.0)  # walking backwards along the path
            snaps.append(_Snapshot(
                time_s=t, ego_pose=Pose(np.array([p[i, 0], p[i, 1], 0.0]), yaw_quaternion(yaw)),
                ego_velocity=ve * fwd, ego_acceleration=ae * fwd + ve * ve * kap * left, ego_yaw_rate=ve * kap,
                v=v, lap=lap, d_sel=cat(d_sel[i], (0,)).astype(int), d_xy=cat(d_xy[i], (0, 2)),
                d_h=cat(d_h[i], (0,)), pv=wk[i][1], p_sel=psel, p_xy=cat(p_xy[i], (0, 2)), p_h=ph,
                s_sel=np.flatnonzero(((self._static_xy - ego_xy[i]) ** 2).sum(axis=1) <= r2)))
        self._snaps = snaps
        return snaps

    def state_at(self, time_s: float) -> WorldState:
        """The world at time_s (seconds; deterministic; any order, later times are cheapest)."""
        t = float(time_s)
        if self._cache is not None and self._cache[0] == t:
            return self._cache[1]
        sn, tr = self._snapshot(t), self.traffic
        v, lap, pv = sn.v, sn.lap, sn.pv
        agents: list[AgentState] = []
        for b, xy, hy in zip(sn.d_sel, sn.d_xy, sn.d_h):
            i, bi = int(self._body_driver[b]), int(self._body_index[b])
            body = tr.d_bodies[i][bi]
            speed, hy = float(v[i]), float(hy)
            if body.name in ("bicycle", "motorcycle"):
                attr = "cycle.with_rider"
            else:
                attr = "vehicle.moving" if speed > 0.3 else "vehicle.stopped"
            agents.append(AgentState(
                self._iid(f"d{bi}", i, int(lap[i])), body.category, body.name, body.size,
                np.array([xy[0], xy[1], body.size[2] / 2]), yaw_quaternion(hy),
                np.array([speed * np.cos(hy), speed * np.sin(hy), 0.0]), attr, body.color))
        for j, xy, hy in zip(sn.p_sel, sn.p_xy, sn.p_h):
            body = tr.p_bodies[j]
            hy = float(hy)
            speed = abs(float(pv[j]))
            agents.append(AgentState(
                self._iid("p", int(j)), body.category, "pedestrian", body.size,
                np.array([xy[0], xy[1], body.size[2] / 2]), yaw_quaternion(hy),
                np.array([speed * np.cos(hy), speed * np.sin(hy), 0.0]),
                "pedestrian.moving" if speed > 0.2 else "pedestrian.standing", body.color))
        for k in sn.s_sel:  # static objects
            agents.append(self._static_state(int(k)))
        state = WorldState(
            time_s=t,
            ego_pose=sn.ego_pose,
            ego_velocity=sn.ego_velocity,
            ego_acceleration=sn.ego_acceleration,
            ego_yaw_rate=sn.ego_yaw_rate,
            agents=tuple(agents),
        )
        self._cache = (t, state)
        return state

    def light_state_at(self, time_s: float) -> "LightState":
        """The world at time_s with the agents as arrays (AgentArrays), for the live renderer.

        Same ego and the same agents, in the same order and with the same values as state_at, but
        without building an AgentState per agent (the hot spot of a live camera cycle); `.agents`
        still gives the AgentState tuple, built on first use.
        """
        return self._light(self._snapshot(float(time_s)))

    def light_states_at(self, times) -> list["LightState"]:
        """light_state_at of several times (e.g. the six exposures of a camera cycle), computed together."""
        return [self._light(sn) for sn in self._snapshots(times)]

    def _light(self, sn: "_Snapshot") -> "LightState":
        ctr_d = np.column_stack([sn.d_xy, self._body_size[sn.d_sel, 2] / 2])
        ctr_p = np.column_stack([sn.p_xy, self._ped_size[sn.p_sel, 2] / 2])
        st = self._static_arrays
        s = sn.s_sel
        h = np.concatenate([sn.d_h, sn.p_h])
        arrays = AgentArrays(
            class_index=np.concatenate([self._body_class[sn.d_sel], self._ped_class[sn.p_sel], st.class_index[s]]),
            without_rider=np.concatenate([np.zeros(len(h), bool), st.without_rider[s]]),
            size=np.concatenate([self._body_size[sn.d_sel], self._ped_size[sn.p_sel], st.size[s]]),
            center=np.concatenate([ctr_d, ctr_p, st.center[s]]),
            yaw=np.concatenate([2 * np.arctan2(np.sin(h / 2), np.cos(h / 2)), st.yaw[s]]),
            color=np.concatenate([self._body_color[sn.d_sel], self._ped_color[sn.p_sel], st.color[s]]))
        return LightState(self, sn, arrays)

    def _prepare_arrays(self) -> None:
        """Per-body, per-pedestrian and per-static constant tables for light_state_at."""
        tr = self.traffic
        cls = {n: i for i, n in enumerate(DETECTION_NAMES)}
        bodies = [tr.d_bodies[i][bi] for i, bi in zip(self._body_driver, self._body_index)]
        self._body_class = np.array([cls[b.name] for b in bodies], int)
        self._body_size = np.array([b.size for b in bodies], float).reshape(-1, 3)
        self._body_color = np.array([b.color for b in bodies], float).reshape(-1, 3)
        self._ped_class = np.full(len(tr.p_bodies), cls["pedestrian"], int)
        self._ped_size = np.array([b.size for b in tr.p_bodies], float).reshape(-1, 3)
        self._ped_color = np.array([b.color for b in tr.p_bodies], float).reshape(-1, 3)
        sts = [self._static_state(k) for k in range(len(tr.statics))]
        self._static_arrays = AgentArrays.of(sts)


@dataclass(frozen=True)
class AgentArrays:
    """Agents as arrays, row n = agent n of the state (the values AgentState holds)."""

    class_index: np.ndarray  # (N,) int, into DETECTION_NAMES
    without_rider: np.ndarray  # (N,) bool, attribute == 'cycle.without_rider'
    size: np.ndarray  # (N, 3) w, l, h
    center: np.ndarray  # (N, 3) global
    yaw: np.ndarray  # (N,) AgentState.yaw (from the rotation quaternion)
    color: np.ndarray  # (N, 3) float64 RGB

    @classmethod
    def of(cls, agents) -> "AgentArrays":
        """The arrays of a sequence of AgentStates."""
        index = {n: i for i, n in enumerate(DETECTION_NAMES)}
        n = len(agents)
        return cls(np.array([index[a.detection_name] for a in agents], int).reshape(n),
                   np.array([a.attribute == "cycle.without_rider" for a in agents], bool).reshape(n),
                   np.array([a.size for a in agents], np.float64).reshape(n, 3),
                   np.array([a.center for a in agents], np.float64).reshape(n, 3),
                   np.array([2 * np.arctan2(a.rotation.z, a.rotation.w) for a in agents], np.float64).reshape(n),
                   np.array([a.color for a in agents], np.float64).reshape(n, 3))


@dataclass(frozen=True)
class _Snapshot:
    """state_at's intermediate: the ego and the near agents' indices, positions and headings."""

    time_s: float
    ego_pose: Pose
    ego_velocity: np.ndarray
    ego_acceleration: np.ndarray
    ego_yaw_rate: float
    v: np.ndarray  # (drivers,) speed
    lap: np.ndarray  # (drivers,)
    d_sel: np.ndarray  # (D,) flat body index of each near driver body
    d_xy: np.ndarray  # (D, 2)
    d_h: np.ndarray  # (D,) heading
    pv: np.ndarray  # (pedestrians,) signed speed
    p_sel: np.ndarray  # (P,) pedestrian index
    p_xy: np.ndarray  # (P, 2)
    p_h: np.ndarray  # (P,) heading of the body (path heading, + pi when walking backwards)
    s_sel: np.ndarray  # (S,) static index


class LightState:
    """A WorldState stand-in whose agents are arrays (`agent_arrays`); `.agents` is built on demand."""

    def __init__(self, world: "World", snap: _Snapshot, arrays: AgentArrays):
        self._world, self.agent_arrays = world, arrays
        self.time_s, self.ego_pose = snap.time_s, snap.ego_pose
        self.ego_velocity, self.ego_acceleration = snap.ego_velocity, snap.ego_acceleration
        self.ego_yaw_rate = snap.ego_yaw_rate

    @property
    def agents(self) -> tuple[AgentState, ...]:
        return self._world.state_at(self.time_s).agents

    def ego_kinematics(self) -> EgoKinematics:
        return WorldState.ego_kinematics(self)


assert set(CLASS_SPECS) == set(DETECTION_NAMES)
