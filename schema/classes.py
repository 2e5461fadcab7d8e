"""Class vocabularies shared by the simulator, the model, training and evaluation.

Kept free of torch so sources and the CLI can import it cheaply.
"""

# The ten nuScenes detection classes, in the devkit's order (nuscenes.eval.detection.constants).
DETECTION_NAMES: tuple[str, ...] = (
    "car",
    "truck",
    "bus",
    "trailer",
    "construction_vehicle",
    "pedestrian",
    "motorcycle",
    "bicycle",
    "traffic_cone",
    "barrier",
)

# Per-pixel semantic classes of the camera label images (index = label value in the PNG).
SEG_CLASSES: tuple[str, ...] = (
    "background",  # ground off the road, anything unlabelled
    "sky",
    "road",
    "lane_marking",
    "road_edge",  # curbs
    "sidewalk",
    "structure",  # buildings, walls, poles
    "vehicle",  # car, truck, bus, trailer, construction vehicle
    "pedestrian",
    "cyclist",  # bicycle, motorcycle (with rider)
    "cone_barrier",  # traffic cones, barriers
)
SEG_INDEX: dict[str, int] = {name: i for i, name in enumerate(SEG_CLASSES)}

# Which label a detection class paints in the camera label image.
DETECTION_TO_SEG: dict[str, str] = {
    "car": "vehicle",
    "truck": "vehicle",
    "bus": "vehicle",
    "trailer": "vehicle",
    "construction_vehicle": "vehicle",
    "pedestrian": "pedestrian",
    "motorcycle": "cyclist",
    "bicycle": "cyclist",
    "traffic_cone": "cone_barrier",
    "barrier": "cone_barrier",
}

# Road geometry classes of the BEV road head and the road ground truth files.
ROAD_CLASSES: tuple[str, ...] = ("lane_divider", "road_edge")

# The seven classes the devkit's tracking evaluation (tracking_nips_2019) scores.
TRACKING_NAMES: tuple[str, ...] = ("bicycle", "bus", "car", "motorcycle", "pedestrian", "trailer", "truck")
