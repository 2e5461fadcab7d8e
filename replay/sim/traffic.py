"""The traffic of the simulated world: its agents and their fixed-step simulation.

Vehicles (and the ego) drive along lane paths (replay.sim.lane_paths) with the Intelligent Driver
Model, stop at red signals before the crosswalks and turn where their road curves; trucks may tow
trailers. Pedestrians walk along sidewalk paths and cross roads only when the crossed road is red;
parked vehicles, work zones (construction vehicle, cones, barriers) and parked bicycles are static.
Where the agents start is decided by replay.sim.moving_agents and replay.sim.static_agents.
The simulation advances in fixed steps from `-warmup_s`; within a step each agent moves with
constant acceleration, so positions, velocities and accelerations agree exactly at any time.
"""
from __future__ import annotations

import numpy as np

from replay.sim.agent_specs import StaticAgent
from replay.sim.config import WorldConfig
from replay.sim.lane_paths import build_paths
from replay.sim.moving_agents import EGO, place_drivers, place_pedestrians
from replay.sim.roads import Intersection, Road
from replay.sim.static_agents import StaticPlacer


class Traffic:
    """All agents of a world and their fixed-step simulation history.

    Drivers (the ego is driver `ego`) are columns d_*, pedestrians p_*; statics never move.
    """

    def __init__(self, rng: np.random.Generator, roads: list[Road], inters: list[Intersection], cfg: WorldConfig):
        self.cfg, self.roads, self.inters = cfg, roads, inters
        self.lanes, self.walks = build_paths(roads, inters, cfg)
        drivers = place_drivers(rng, self.lanes, roads, cfg)
        self.d_lane, self.d_s, self.d_v, self.d_v0 = drivers.lane, drivers.s, drivers.v, drivers.v0
        self.d_amax, self.d_b, self.d_T, self.d_len = drivers.amax, drivers.b, drivers.T, drivers.length
        self.d_lap = np.zeros(len(drivers.s), int)
        self.d_bodies = drivers.bodies
        self.ego = EGO
        walkers = place_pedestrians(rng, self.walks, cfg)
        self.p_path, self.p_s, self.p_speed = walkers.path, walkers.s, walkers.speed
        self.p_dir, self.p_lat, self.p_bodies = walkers.direction, walkers.lateral, walkers.bodies
        # history: one row per step, from t = -warmup
        self.t0 = -cfg.warmup_s
        self.hist_s, self.hist_v, self.hist_a, self.hist_lap = [self.d_s.copy()], [self.d_v.copy()], [], [self.d_lap.copy()]
        self.hist_ps, self.hist_pv, self.hist_pdir = [self.p_s.copy()], [], []
        self._prepare()
        # static objects do not affect the moving ones: place them after the warm-up, knowing where
        # the ego is at t = 0
        self.advance_to(0.0)
        ego_path, ego_road, _ = self.lanes[self.d_lane[self.ego]]
        self.statics: list[StaticAgent] = StaticPlacer(roads, cfg).place(
            rng, ego_path, ego_road, self.drivers_at(0.0)[0][self.ego])

    # ---- simulation ------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Constant index tables for the vectorised step (agents never change lanes or paths)."""
        order = np.argsort(self.d_lane, kind="stable")
        self._lane_sorted = self.d_lane[order]
        starts = np.searchsorted(self._lane_sorted, self._lane_sorted, side="left")
        ends = np.searchsorted(self._lane_sorted, self._lane_sorted, side="right")
        self._grp_start, self._grp_end = starts, ends
        self._rings = np.array([p.ring for p, _, _ in self.lanes])[self.d_lane]
        # a new life (instance) begins when a driver re-enters an open lane; loops never renew
        self._open = ~np.array([p.closed for p, _, _ in self.lanes])[self.d_lane]
        st_lane, st_s, st_inter, st_road = [], [], [], []
        for k, (path, road, _) in enumerate(self.lanes):
            for stop, it in zip(path.stops, path.stop_inter):
                st_lane.append(k), st_s.append(stop), st_inter.append(it), st_road.append(road)
        self._st_lane, self._st_s = np.array(st_lane, int), np.array(st_s, float)
        self._st_inter, self._st_road = np.array(st_inter, int), np.array(st_road, int)
        cr_path, cr_a, cr_b, cr_inter, cr_road = [], [], [], [], []
        for k, path in enumerate(self.walks):
            for a, b, it in zip(path.cross_a, path.cross_b, path.cross_inter):
                cr_path.append(k), cr_a.append(a), cr_b.append(b), cr_inter.append(it), cr_road.append(path.road)
        self._cr_path, self._cr_a, self._cr_b = np.array(cr_path, int), np.array(cr_a), np.array(cr_b)
        self._cr_inter, self._cr_road = np.array(cr_inter, int), np.array(cr_road, int)
        self._walk_len = np.array([p.length for p in self.walks])
        self._walk_closed = np.array([p.closed for p in self.walks])
        self._inter_off = np.array([it.phase_offset_s for it in self.inters])
        self._inter_major = np.array([it.major for it in self.inters])
        self._lane_road_ego = self.lanes[self.d_lane[self.ego]][1]
        self._ped_block = np.zeros(len(self.inters), bool)

    def _hold_for_ego(self, s: np.ndarray, t: float) -> None:
        """Signal priority for the ego (like a bus-priority signal), so scenes keep moving.

        While the ego is within `ego_signal_hold_m` of a stop line on its road, that road's green
        is held, or if it is red, the other road's green is cut short (through the all-red
        clearance). Pedestrians do not start crossing the ego's road while the ego is within a
        longer distance, so nobody is caught on the crossing when the green returns.
        """
        cfg = self.cfg
        self._ped_block = np.zeros(len(self.inters), bool)
        path, road, _ = self.lanes[self.d_lane[self.ego]]
        if len(path.stops) == 0:
            return
        dist = np.mod(path.stops - s[self.ego] + 40.0, path.ring) - 40.0  # (K,) ahead > 0, inside < 0
        self._ped_block[path.stop_inter[(dist < cfg.ego_signal_hold_m + 300.0) & (dist > -40.0)]] = True
        near = np.unique(path.stop_inter[(dist < cfg.ego_signal_hold_m) & (dist > -40.0)])
        if len(near) == 0:
            return
        green, left = self._green(near, np.full(len(near), road), t)
        hold = near[green & (left < 1.0)]
        self._inter_off[hold] -= cfg.sim_dt  # freeze the phase just before the end of green
        c = cfg.signal_cycle_s
        for it in near[~green]:
            phase = np.mod(t + self._inter_off[it], c)
            target = c - cfg.clearance_s  # the all-red clearance before the major green
            if phase < target and road == self._inter_major[it]:
                self._inter_off[it] += target - phase

    def _green(self, inter: np.ndarray, road: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(green, seconds of green left) per (intersection, road) pair at time t.

        Each intersection cycles: major road green, all-red clearance, minor road green, all-red.
        """
        cfg = self.cfg
        c = cfg.signal_cycle_s
        g, clr = c * cfg.major_green_fraction, cfg.clearance_s
        phase = np.mod(t + self._inter_off[inter], c)
        major = road == self._inter_major[inter]
        green = np.where(major, phase < g, (phase >= g + clr) & (phase < c - clr))
        left = np.where(major, g - phase, c - clr - phase)
        return green, left

    def _step(self, t: float) -> None:
        """Advance every driver, then every pedestrian, by one step from time t."""
        self._hold_for_ego(self.hist_s[-1], t)
        self._step_drivers(t)
        self._step_pedestrians(t)

    def _step_drivers(self, t: float) -> None:
        """Intelligent Driver Model: follow the leader on the lane or stop at a red signal's stop line."""
        dt = self.cfg.sim_dt
        s, v = self.hist_s[-1], self.hist_v[-1]
        rings = self._rings
        # leaders: sort by (lane, s); the leader is the next in the lane, wrapping to the first
        order = np.lexsort((s, self.d_lane))
        pos = np.arange(len(order))
        nxt = np.where(pos + 1 < self._grp_end, pos + 1, self._grp_start)
        lead = np.empty_like(order)
        lead[order] = order[nxt]
        gap = np.mod(s[lead] - self.d_len[lead] - s, rings)
        dv = v - v[lead]
        alone = lead == np.arange(len(s))
        gap = np.where(alone, 1e6, gap)
        dv = np.where(alone, 0.0, dv)
        # red signals: a stationary leader at the stop line, unless too close to stop
        if len(self._st_s):
            green, _ = self._green(self._st_inter, self._st_road, t)
            red = ~green
            same = self.d_lane[:, None] == self._st_lane[None, :]  # (drivers, stops)
            dist = np.mod(self._st_s[None, :] - s[:, None] + 1.0, rings[:, None]) - 1.5
            cand = same & red[None, :] & (dist < 60.0) & (dist > (v * v / 10.0)[:, None] - 0.5)
            dist = np.where(cand, dist, np.inf).min(axis=1)
            stop_now = dist < gap
            gap = np.where(stop_now, np.maximum(dist, 0.01), gap)
            dv = np.where(stop_now, v, dv)
        b, am, T = self.d_b, self.d_amax, self.d_T
        s_star = 2.0 + v * T + v * dv / (2 * np.sqrt(am * b))
        acc = am * (1 - (v / self.d_v0) ** 4 - (np.maximum(s_star, 0) / np.maximum(gap, 0.01)) ** 2)
        acc = np.clip(acc, -9.0, am)
        v_new = np.maximum(v + acc * dt, 0.0)
        a_eff = (v_new - v) / dt
        s_raw = s + v * dt + 0.5 * a_eff * dt * dt
        lap = self.hist_lap[-1] + ((s_raw >= rings) & self._open)
        self.hist_a.append(a_eff)
        self.hist_s.append(np.mod(s_raw, rings))
        self.hist_v.append(v_new)
        self.hist_lap.append(lap)

    def _step_pedestrians(self, t: float) -> None:
        """Walk along the sidewalk, turning at open ends; wait at a crossing unless their own road is
        green long enough to cross."""
        dt = self.cfg.sim_dt
        ps = self.hist_ps[-1]
        self.hist_pdir.append(self.p_dir.copy())
        pv = self.p_speed * self.p_dir
        if len(self._cr_a) and len(ps):
            green, left = self._green(self._cr_inter, self._cr_road, t)
            same = self.p_path[:, None] == self._cr_path[None, :]  # (peds, crossings)
            d = self.p_dir[:, None]
            entry = np.where(d > 0, self._cr_a[None, :], self._cr_b[None, :])
            plen = np.where(self._walk_closed, self._walk_len, 1e9)[self.p_path][:, None]
            dist = np.mod((entry - ps[:, None]) * d, plen)
            sp = np.maximum(self.p_speed, 1e-6)[:, None]
            ok = green[None, :] & (left[None, :] > (self._cr_b - self._cr_a)[None, :] / sp + 1.0)
            ok &= ~self._ped_block[self._cr_inter][None, :] | (self._cr_road == self._lane_road_ego)[None, :]
            wait = (same & (dist <= sp * dt + 0.3) & ~ok).any(axis=1) & (self.p_speed > 0)
            pv = np.where(wait, 0.0, pv)
        s_new = ps + pv * dt
        plen = self._walk_len[self.p_path]
        closed = self._walk_closed[self.p_path]
        turn = ~closed & ((s_new < 0) | (s_new > plen))
        s_new = np.where(closed, np.mod(s_new, plen), np.clip(s_new, 0, plen))
        self.p_dir = np.where(turn, -self.p_dir, self.p_dir)
        self.hist_pv.append(pv)
        self.hist_ps.append(s_new)

    def advance_to(self, t: float) -> int:
        """Simulate until the step after t exists; returns the step index k with t in [t_k, t_k+1]."""
        dt = self.cfg.sim_dt
        k = int(np.floor((t - self.t0) / dt + 1e-9))
        if k < 0:
            raise ValueError(f"time {t} s is before the simulation start {self.t0} s")
        while len(self.hist_s) <= k + 1:
            self._step(self.t0 + (len(self.hist_s) - 1) * dt)
        return k

    def drivers_at(self, t: float):
        """(s_front, v, a, lap) of every driver at t, exact within the step's constant acceleration."""
        k = self.advance_to(t)
        tau = t - (self.t0 + k * self.cfg.sim_dt)
        a = self.hist_a[k]
        rings = self._rings
        s_raw = self.hist_s[k] + self.hist_v[k] * tau + 0.5 * a * tau * tau
        lap = self.hist_lap[k] + ((s_raw >= rings) & self._open)
        return np.mod(s_raw, rings), self.hist_v[k] + a * tau, a, lap

    def walkers_at(self, t: float):
        """(s, signed speed, walking direction +-1) of every pedestrian at t."""
        k = self.advance_to(t)
        tau = t - (self.t0 + k * self.cfg.sim_dt)
        pv = self.hist_pv[k]
        s = self.hist_ps[k] + pv * tau
        return s, pv, self.hist_pdir[k]
