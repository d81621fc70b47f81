"""Detectors for OOR and relation accuracy: the interface, the built-in one (the Shapes
oracle), loading a user's one by import path, and scoring detections against graphs.

The contract (a Protocol: nothing to inherit, nothing to register)::

    class MyDetector:
        name = "my detector"            # optional: recorded with the results
        labels = {"person", "dog"}      # optional: the graph object names it can find
        def detect(self, image: np.ndarray) -> list[Detection]: ...

``image`` is one generated image, (H, W, 3) uint8 RGB, at its own resolution. Each
``Detection`` has a label in the graphs' own vocabulary (map your classes to those names),
a box (x0, y0, x1, y1) in pixels of that image, or None for a detector that does not
localise (then OOR only), and a score. Return only what you keep: no threshold is applied
here. ``sg2image eval --detector package.module:factory`` imports the module and calls
``factory()`` with no arguments; nothing is unpickled or read as code from a file.

Scoring reuses the Shapes oracle's rules (eval/oracle.py): graph objects take detections
of the same label, each used once (``oracle.match``); OOR = matched / objects, leaving out
objects whose label is not in ``labels`` (counted as not detectable). A relation is right
when both ends are matched and the rule holds on their boxes: ``oracle.relation_holds``
(centres for left of / right of / above / below, the larger box side for bigger / smaller
than), and COCO's ``synthetic_predicate`` for inside / surrounding (strict containment).
Predicates no rule covers (Visual Genome's "on", "wearing", ...) are counted, not judged.
With the built-in Shapes detector, also the oracle's placement (``oracle.placement_counts``:
each colour's largest blob, shape ignored), which needs the image, not only Detections.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from sg2image.data.coco import synthetic_predicate
from sg2image.eval import oracle
from sg2image.eval.errors import EvalSetupError
from sg2image.graph import IN_IMAGE, SceneGraph

Box = tuple[float, float, float, float]
_CONTAINMENT = ("inside", "surrounding")
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Detection:
    """One object found: a graph vocabulary label, a pixel box (x0, y0, x1, y1) or None,
    and the detector's confidence."""

    label: str
    box: Box | None = None
    score: float = 1.0


@runtime_checkable
class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Detection]:
        """(H, W, 3) uint8 RGB image -> the objects found in it."""
        ...


class ShapesDetector:
    """The Shapes oracle's detector (colour, connected components, fill ratios)."""

    name = "Shapes oracle"
    labels = None  # every "<colour> <shape>" of the Shapes world

    def detect(self, image: np.ndarray) -> list[Detection]:
        return [Detection(d.label, tuple(map(float, d.bbox))) for d in oracle.detect(image)]

    def placement(self, image: np.ndarray, graph: SceneGraph) -> tuple[int, int]:
        """(correct, judged) triples of the oracle's placement measure in an (H, W, 3)
        uint8 image: it judges colour blobs whatever their shape, which Detections omit."""
        return oracle.placement_counts(graph, oracle.colour_blobs(image))


def load_detector(spec: str) -> Detector | None:
    """'none', 'shapes', or 'package.module:factory' (imported, then factory() is called)."""
    if spec == "none":
        return None
    if spec == "shapes":
        return ShapesDetector()
    if not _SPEC.match(spec):
        raise EvalSetupError(
            f"detector {spec!r}: expected 'shapes', 'none' or an import path MODULE:FACTORY "
            "(e.g. my_detectors:yolo)"
        )
    module_name, factory_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise EvalSetupError(f"detector {spec!r}: cannot import {module_name!r} ({e})") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise EvalSetupError(f"detector {spec!r}: {module_name} has no callable {factory_name!r}")
    detector = factory()
    if not isinstance(detector, Detector):
        raise EvalSetupError(
            f"detector {spec!r}: {factory_name}() returned a {type(detector).__name__}, "
            "which has no detect(image) method"
        )
    return detector


def describe(detector: Detector, spec: str) -> dict:
    return {"name": getattr(detector, "name", type(detector).__name__), "spec": spec}


def _as_oracle(d: Detection, image_size: tuple[int, int]) -> oracle.Detection:
    """The oracle's view of a detection: centre, larger side and area of its box. Without a
    box, the image centre and size 0 (used for matching only, never judged)."""
    if d.box is None:
        h, w = image_size
        return oracle.Detection(d.label, (w / 2, h / 2), 0.0, (0, 0, w, h), 0)
    x0, y0, x1, y1 = d.box
    return oracle.Detection(
        d.label, ((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0), d.box, (x1 - x0) * (y1 - y0)
    )


def judgeable(predicate: str) -> bool:
    return predicate in _CONTAINMENT or oracle.can_judge(predicate)


def _holds(predicate: str, s: oracle.Detection, o: oracle.Detection) -> bool:
    if predicate in _CONTAINMENT:
        return synthetic_predicate(s.bbox, o.bbox, s.centre, o.centre) == predicate
    return oracle.relation_holds(predicate, s, o)


@dataclass
class GraphScore:
    """One image against its graph: the oracle's ImageScore plus what was left out."""

    score: oracle.ImageScore
    not_judged: Counter  # predicate -> triples no rule or no box could judge
    not_detectable: int  # objects whose label the detector cannot find
    located: bool  # whether any detection had a box
    placement: tuple[int, int] | None = None  # (correct, judged); Shapes detector only


def score_detections(
    graph: SceneGraph,
    detections: Sequence[Detection],
    image_size: tuple[int, int],
    labels: Collection[str] | None = None,
) -> GraphScore:
    """Match ``detections`` in an (H, W) image to the graph's objects and judge its triples."""
    dets = [_as_oracle(d, image_size) for d in detections]
    matches = oracle.match(graph, dets, image_size)
    detectable = [labels is None or name in labels for name in graph.objects]
    per_predicate: dict[str, list[int]] = {}
    not_judged: Counter = Counter()
    for s, p, o in graph.relationships:
        if p == IN_IMAGE:
            continue
        ms, mo = matches[s], matches[o]
        unlocated = any(m is not None and detections[m].box is None for m in (ms, mo))
        if not judgeable(p) or not (detectable[s] and detectable[o]) or unlocated:
            not_judged[p] += 1
            continue
        counts = per_predicate.setdefault(p, [0, 0])
        counts[1] += 1
        counts[0] += ms is not None and mo is not None and _holds(p, dets[ms], dets[mo])
    found = [m is not None and ok for m, ok in zip(matches, detectable, strict=True)]
    score = oracle.ImageScore(
        num_objects=sum(detectable),
        matched_objects=sum(found),
        per_predicate=per_predicate,
        detections=dets,
        matches=matches,
    )
    located = any(d.box is not None for d in detections)
    return GraphScore(score, not_judged, len(graph.objects) - sum(detectable), located)


def summarise(scores: Sequence[GraphScore]) -> dict:
    """OOR, relation accuracy (None when the detector gave no box at all), placement (None
    unless measured) and the counts."""
    report = oracle.aggregate([s.score for s in scores]).to_json()
    not_judged: Counter = Counter()
    for s in scores:
        not_judged.update(s.not_judged)
    located = any(s.located for s in scores)
    placed = [s.placement for s in scores if s.placement is not None]
    judged = sum(j for _, j in placed)
    return {
        "oor": report["object_recall"],
        "relation_accuracy": report["relation_accuracy"] if located else None,
        "per_predicate": report["per_predicate"] if located else {},
        "num_objects": report["num_objects"],
        "matched_objects": report["matched_objects"],
        "num_relations_judged": report["num_relations"] if located else 0,
        "relations_not_judged": dict(sorted(not_judged.items())),
        "objects_not_detectable": sum(s.not_detectable for s in scores),
        # None when not measured (a detector other than Shapes'), else over judged triples
        "placement": sum(c for c, _ in placed) / judged if judged else None,
        "placement_judged": judged if placed else None,
    }
