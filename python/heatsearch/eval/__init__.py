"""Evaluation: the benchmarks' ground truth and descriptor files, and mAP as revisitop computes it.

* :mod:`~heatsearch.eval.evaluate`: :func:`compute_map` (mAP, mP@k) and :func:`revisited`
  (the Easy/Medium/Hard protocols of Revisited Oxford and Paris).
* :mod:`~heatsearch.eval.ground_truth`: :func:`load_ground_truth` (revisitop ``.pkl``, the
  paper authors' ``.mat``, heatsearch's JSON) and :func:`save_ground_truth_json`.
* :mod:`~heatsearch.eval.descriptors`: :func:`load_descriptors` (``.npy``, ``.mat``).
"""

from .descriptors import load_descriptors
from .evaluate import DEFAULT_KAPPAS, PROTOCOLS, MapResult, compute_map, revisited
from .ground_truth import (
    JSON_FORMAT,
    JSON_VERSION,
    GroundTruth,
    load_ground_truth,
    save_ground_truth_json,
)

__all__ = [
    "compute_map",
    "revisited",
    "MapResult",
    "PROTOCOLS",
    "DEFAULT_KAPPAS",
    "GroundTruth",
    "load_ground_truth",
    "save_ground_truth_json",
    "JSON_FORMAT",
    "JSON_VERSION",
    "load_descriptors",
]
