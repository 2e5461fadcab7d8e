"""WorldConfig: every knob of the simulated world, in one frozen dataclass (imported by the road, traffic and
world modules alike, so none of them imports another for it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorldConfig:
    """Every knob of the simulated world (lengths in metres, speeds in m/s, times in seconds)."""

    # road network
    loop_side_x: tuple[float, float] = (320.0, 440.0)  # straight length of the loop's long sides
    loop_side_y: tuple[float, float] = (220.0, 320.0)  # straight length of the loop's short sides
    corner_radius: tuple[float, float] = (45.0, 75.0)  # loop corner radius (clothoid-eased)
    max_bend_curvature: float = 1 / 250  # gentle S-bends on the straights, 1/m
    cross_roads: int = 2  # straight roads crossing the loop (0..2); they also cross each other
    cross_road_extension: float = 90.0  # how far cross roads run beyond the loop
    lanes_per_direction: int = 2  # on the loop; cross roads get 1..this
    lane_width: float = 3.5
    parking_width: float = 2.4  # parking strip beside the curb (loop always, cross roads at random)
    curb_width: float = 0.3
    sidewalk_width: float = 3.5
    map_margin: float = 60.0  # map coordinates start at about this (positive, like nuScenes)
    raster_resolution: float = 0.1  # metres per pixel of the ground raster the renderer samples
    # roadside
    building_fill: float = 0.8  # probability a building slot holds a building
    pole_spacing: float = 30.0
    # signals
    signal_cycle_s: float = 36.0
    major_green_fraction: float = 0.65  # share of the cycle the major road (the loop) is green
    clearance_s: float = 4.0  # all-red time after each green
    # traffic
    vehicle_spacing: float = 28.0  # mean free gap between moving vehicles in a lane
    moving_mix: tuple = (("car", 0.70), ("truck", 0.07), ("bus", 0.05), ("truck_trailer", 0.04),
                         ("motorcycle", 0.06), ("bicycle", 0.08))  # (kind, weight) of lane traffic
    parked_occupancy: float = 0.55  # chance a parking slot holds a vehicle
    parked_mix: tuple = (("car", 0.82), ("truck", 0.05), ("trailer", 0.03), ("bus", 0.02), ("motorcycle", 0.05),
                         ("construction_vehicle", 0.03))  # (class, weight) of parked vehicles
    work_zone_rate: float = 0.02  # chance per parking slot of starting a work zone (cones, barriers)
    cone_group_rate: float = 0.03  # chance per parking slot of a few cones or a barrier
    parked_bicycle_rate: float = 0.35  # chance per 60 m of sidewalk of a few parked bicycles
    pedestrian_spacing: float = 14.0  # mean spacing of pedestrians along each sidewalk
    standing_fraction: float = 0.25  # share of pedestrians that stand still
    hidden_return_m: float = 120.0  # open lanes: hidden stretch a vehicle travels before re-entering
    ego_showcase: bool = True  # park one of each rare class just ahead of the ego's start (all ten classes per scene)
    # ego
    ego_signal_hold_m: float = 250.0  # signal priority for the ego within this distance of a stop line
    ego_desired_speed: tuple[float, float] = (8.5, 11.0)
    # simulation
    sim_dt: float = 0.1
    warmup_s: float = 10.0  # traffic runs this long before t = 0
    agent_radius: float = 120.0  # state_at reports agents within this distance of the ego
