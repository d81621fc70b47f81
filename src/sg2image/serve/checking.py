"""Graph documents checked with bounded work: :func:`sg2image.graph.parse_graphs`, one scene at a
time, stopping once enough problems are found.

parse_graphs reports every problem of every scene, and an unknown name costs a fuzzy search of
the vocabulary: a 256 kB document of 20,000 misspelt names took 3 s of CPU and answered 5 MB.
Here a scene over the object or relationship limit is reported by its counts alone (its entries
are not checked one by one: it must shrink first), and scenes after the first
``max_problems`` problems are not checked. Otherwise the lines are parse_graphs' own, so
``/api/validate`` still says what ``sg2image validate`` prints.
"""

from __future__ import annotations

from typing import Any

from sg2image.graph import GraphValidationError, SceneGraph, Vocab, over_limit, parse_graphs

MAX_PROBLEMS = 50


def _over_limits(scene: Any, where: str, max_objects: int, max_relationships: int) -> list[str]:
    """The count problems of a scene with too many objects or relationships, in
    parse_graphs' words; [] if it is within both (or not a scene: parse_graphs says why)."""
    if not isinstance(scene, dict):
        return []
    at = f"{where}." if where else ""
    out = []
    for kind, limit in (("objects", max_objects), ("relationships", max_relationships)):
        if isinstance(scene.get(kind), list):
            out += over_limit(at, kind, len(scene[kind]), limit)
    return out


def check_graphs(
    data: Any,
    vocab: Vocab | None,
    max_objects: int,
    max_relationships: int,
    max_problems: int = MAX_PROBLEMS,
) -> list[SceneGraph]:
    """As parse_graphs(data, ...), with the bounds above. Raises GraphValidationError."""
    limits = dict(vocab=vocab, max_objects=max_objects, max_relationships=max_relationships)
    single = isinstance(data, dict)
    if not single and not (isinstance(data, list) and data):
        return parse_graphs(data, **limits)  # not a document: its one-line answer
    scenes = [data] if single else data
    problems: list[str] = []
    graphs: list[SceneGraph] = []
    for i, scene in enumerate(scenes):
        where = "" if single else f"scenes[{i}]"
        found = _over_limits(scene, where, max_objects, max_relationships)
        if not found:
            try:  # as the i-th scene of a list: parse_graphs writes "scenes[0]..." for it
                graphs += parse_graphs(scene if single else [scene], **limits)
            except GraphValidationError as e:
                found = [f"{where}{p.removeprefix('scenes[0]')}" for p in e.problems]
        problems += found
        if len(problems) >= max_problems and i + 1 < len(scenes):
            rest = len(scenes) - i - 1
            problems.append(f"{rest} more scene(s) not checked: fix the problems above first")
            break
    if problems:
        raise GraphValidationError(problems)
    return graphs
