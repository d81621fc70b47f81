"""Scene graphs: the input type, its validation, the vocabulary and sg2im packing.

A scene graph is the sg2im JSON convention::

    {"objects": ["sky", "grass", "sheep"],
     "relationships": [[0, "above", 1], [2, "standing on", 1]],
     "boxes": [[x0, y0, x1, y1], ...],          # optional, in [0, 1]
     "attributes": [["blue"], [], ["white"]]}    # optional

Every packed graph gets an ``__image__`` node and one ``[i, "__in_image__", image]``
triple per object (sg2im), added here and never written into the caller's data.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError

if TYPE_CHECKING:  # torch only where graphs become tensors: the CLI starts without it
    import torch

logger = logging.getLogger(__name__)

IMAGE_OBJECT = "__image__"
IN_IMAGE = "__in_image__"
# Depth order (the Shapes world's depth version, and Visual Genome's predicates of the same
# names): "a in front of b" and "b behind a" say the same thing.
FRONT, BEHIND = "in front of", "behind"
DEPTH_PREDICATES = (FRONT, BEHIND)

Number = StrictFloat | StrictInt


class GraphValidationError(ValueError):
    """Raised with every problem found, each prefixed by where it is (``relationships[2]: ...``)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _TypedScene(BaseModel):
    """Types only; the semantic checks are in :func:`scene_problems`, so all can be reported."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objects: list[StrictStr]
    relationships: list[tuple[StrictInt, StrictStr, StrictInt]] = []
    boxes: list[tuple[Number, Number, Number, Number]] | None = None
    attributes: list[list[StrictStr]] | None = None


class SceneGraph(_TypedScene):
    """One scene graph. Constructing it directly validates it too (raises GraphValidationError)."""

    def __init__(self, **data: Any):
        # Not a pydantic validator: pydantic would fold our located messages into one of its own.
        super().__init__(**data)
        problems = scene_problems(self)
        if problems:
            raise GraphValidationError(problems)

    @property
    def num_objects(self) -> int:
        return len(self.objects)

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "objects": list(self.objects),
            "relationships": [list(r) for r in self.relationships],
        }
        if self.boxes is not None:
            out["boxes"] = [[float(v) for v in b] for b in self.boxes]
        if self.attributes is not None:
            out["attributes"] = [list(a) for a in self.attributes]
        return out


def label_prompt(objects: Sequence[str]) -> str:
    """The text a graph's objects read as: their labels, comma separated (the authors' label
    prompt). Datasets caption with it and the pipeline's label tokens encode it, so it lives
    here, below both."""
    return ", ".join(objects)


class Vocab:
    """Object and predicate names; index 0 is ``__image__`` / ``__in_image__``."""

    def __init__(self, object_names: Sequence[str], predicate_names: Sequence[str]):
        if not object_names or object_names[0] != IMAGE_OBJECT:
            raise ValueError(f"vocab: object_names[0] must be {IMAGE_OBJECT!r}")
        if not predicate_names or predicate_names[0] != IN_IMAGE:
            raise ValueError(f"vocab: predicate_names[0] must be {IN_IMAGE!r}")
        for kind, names in (("object_names", object_names), ("predicate_names", predicate_names)):
            seen: set[str] = set()
            for i, name in enumerate(names):
                if not isinstance(name, str) or not name.strip():
                    raise ValueError(f"vocab: {kind}[{i}]: must be a non-empty string")
                if name in seen:
                    raise ValueError(f"vocab: {kind}[{i}]: duplicate name {name!r}")
                seen.add(name)
        self.object_names = list(object_names)
        self.predicate_names = list(predicate_names)
        self._obj = {n: i for i, n in enumerate(self.object_names)}
        self._pred = {n: i for i, n in enumerate(self.predicate_names)}

    @classmethod
    def build(cls, objects: Sequence[str], predicates: Sequence[str]) -> Vocab:
        """A vocab from the user-facing names; the special names are prepended."""
        return cls([IMAGE_OBJECT, *objects], [IN_IMAGE, *predicates])

    @property
    def num_objects(self) -> int:
        return len(self.object_names)

    @property
    def num_predicates(self) -> int:
        return len(self.predicate_names)

    def object_idx(self, name: str) -> int:
        return self._obj[name]

    def pred_idx(self, name: str) -> int:
        return self._pred[name]

    def has_object(self, name: str) -> bool:
        return name in self._obj

    def has_predicate(self, name: str) -> bool:
        return name in self._pred

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab)
            and self.object_names == other.object_names
            and self.predicate_names == other.predicate_names
        )

    def __repr__(self) -> str:
        return f"Vocab({self.num_objects} objects, {self.num_predicates} predicates)"

    def to_json(self) -> dict:
        # The sg2im keys too, so checkpoints of that lineage and ours read each other's vocab.
        return {
            "object_idx_to_name": self.object_names,
            "pred_idx_to_name": self.predicate_names,
            "object_name_to_idx": dict(self._obj),
            "pred_name_to_idx": dict(self._pred),
        }

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        try:
            return cls(data["object_idx_to_name"], data["pred_idx_to_name"])
        except (KeyError, TypeError) as e:
            raise ValueError(
                "vocab: expected keys 'object_idx_to_name' and 'pred_idx_to_name'"
            ) from e

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as e:
            raise ValueError(f"{path}: vocab file not found") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from e
        return cls.from_json(data)


# ---------------------------------------------------------------------------- validation


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, [k for k in known if not k.startswith("__")], n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def scene_problems(
    scene: _TypedScene,
    vocab: Vocab | None = None,
    max_objects: int | None = None,
    max_relationships: int | None = None,
    where: str = "",
) -> list[str]:
    """Every semantic problem of a typed scene, each located (``where`` prefixes the paths)."""
    at = f"{where}." if where else ""
    problems: list[str] = []
    n = len(scene.objects)
    if n == 0:
        problems.append(f"{at}objects: a scene needs at least one object")
    problems += over_limit(at, "objects", n, max_objects)
    for i, name in enumerate(scene.objects):
        if not name.strip():
            problems.append(f"{at}objects[{i}]: empty label")
        elif name == IMAGE_OBJECT:
            problems.append(f"{at}objects[{i}]: {IMAGE_OBJECT!r} is reserved (added automatically)")
        elif vocab is not None and not vocab.has_object(name):
            problems.append(
                f"{at}objects[{i}]: unknown object {name!r}{_suggest(name, vocab.object_names)}"
            )
    problems += over_limit(at, "relationships", len(scene.relationships), max_relationships)
    for k, (s, p, o) in enumerate(scene.relationships):
        loc = f"{at}relationships[{k}]"
        for role, idx in (("subject", s), ("object", o)):
            if not 0 <= idx < n:
                plural = "object" if n == 1 else "objects"
                problems.append(f"{loc}: {role} index {idx} out of range ({n} {plural})")
        if s == o:
            problems.append(f"{loc}: object {s} related to itself")
        if not p.strip():
            problems.append(f"{loc}: empty predicate")
        elif p == IN_IMAGE:
            problems.append(f"{loc}: {IN_IMAGE!r} is reserved (added automatically)")
        elif vocab is not None and not vocab.has_predicate(p):
            problems.append(f"{loc}: unknown predicate {p!r}{_suggest(p, vocab.predicate_names)}")
    for key in ("boxes", "attributes"):
        values = getattr(scene, key)
        if values is not None and len(values) != n:
            problems.append(f"{at}{key}: {len(values)} entries for {n} objects")
    for i, box in enumerate(scene.boxes or []):
        x0, y0, x1, y1 = box
        if not all(math.isfinite(v) for v in box):
            problems.append(f"{at}boxes[{i}]: not a finite number")
        elif not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            problems.append(f"{at}boxes[{i}]: must be x0 < x1, y0 < y1, all in [0, 1]")
    for i, attrs in enumerate(scene.attributes or []):
        for j, a in enumerate(attrs):
            if not a.strip():
                problems.append(f"{at}attributes[{i}][{j}]: empty attribute")
    if vocab is not None and any(vocab.has_predicate(p) for p in DEPTH_PREDICATES):
        indices_ok = all(0 <= s < n and 0 <= o < n and s != o for s, _, o in scene.relationships)
        if indices_ok:  # out-of-range ends are reported above; no order to check without them
            problems += [f"{at}{p}" for p in depth_problems(scene.relationships)]
    return problems


def _depth_edges(relationships: Sequence[tuple[int, str, int]]):
    """(k, front, back) of every depth triple, in order."""
    for k, (s, p, o) in enumerate(relationships):
        if p == FRONT:
            yield k, s, o
        elif p == BEHIND:
            yield k, o, s


def depth_problems(relationships: Sequence[tuple[int, str, int]]) -> list[str]:
    """A located problem for each depth triple that closes a cycle with the depth triples
    before it ("a in front of b" with "b in front of a", directly or through others)."""
    in_front_of: dict[int, set[int]] = {}  # front -> the objects it is directly in front of
    problems = []
    for k, front, back in _depth_edges(relationships):
        # a cycle if front is already (transitively) behind back: back reaches front
        seen, stack = {back}, [back]
        while stack:
            for nxt in in_front_of.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        if front in seen:
            s, p, o = relationships[k]
            problems.append(
                f"relationships[{k}]: {p!r} makes a depth cycle between objects {s} and {o}"
            )
            continue  # the rest is checked against the order without this triple
        in_front_of.setdefault(front, set()).add(back)
    return problems


def depth_ranks(graph: _TypedScene) -> list[int]:
    """Per object, its depth rank from the graph's depth triples: 0 when it is in front of
    nothing, else 1 + the largest rank of the objects it is in front of. Drawing objects
    by increasing rank paints every one after (over) everything it is in front of.
    Raises GraphValidationError (located) when the depth triples contradict each other."""
    problems = depth_problems(graph.relationships)
    if problems:
        raise GraphValidationError(problems)
    ranks = [0] * len(graph.objects)
    edges = [(front, back) for _, front, back in _depth_edges(graph.relationships)]
    changed = True
    while changed:  # without cycles, settles within as many passes as the longest chain
        changed = False
        for front, back in edges:
            if ranks[front] < ranks[back] + 1:
                ranks[front] = ranks[back] + 1
                changed = True
    return ranks


def over_limit(at: str, kind: str, count: int, limit: int | None) -> list[str]:
    """[the problem] if a scene has more ``kind`` ("objects", "relationships") than ``limit``
    (None: no limit), else []; ``at``: the scene's location prefix ("scenes[2]." or "")."""
    if limit is None or count <= limit:
        return []
    return [f"{at}{kind}: {count} {kind}, this model accepts at most {limit}"]


def repeated_triples(scene: _TypedScene, where: str = "") -> list[str]:
    """A located note per triple equal to an earlier one. Not a problem: dataset graphs
    (sg2im's COCO relations, VG) repeat triples, so a user's graph may too; but in a
    hand-written graph it is more often a slip, hence the warning in parse_graphs."""
    at = f"{where}." if where else ""
    seen: dict[tuple[int, str, int], int] = {}
    notes = []
    for k, triple in enumerate(scene.relationships):
        if triple in seen:
            notes.append(f"{at}relationships[{k}]: repeats relationships[{seen[triple]}]")
        else:
            seen[triple] = k
    return notes


def _format_loc(where: str, loc: tuple) -> str:
    path = where
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "scene"


def _type_problems(err: ValidationError, where: str) -> list[str]:
    out: dict[str, str] = {}
    for e in err.errors():
        # pydantic names union members in loc ("float", "int") and reports each member's
        # failure: one message per location is what a user needs.
        loc = tuple(p for p in e["loc"] if p not in ("float", "int"))
        msg = "expected a number" if len(loc) < len(e["loc"]) else e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field" + _suggest(str(loc[-1]), list(_TypedScene.model_fields))
        out.setdefault(_format_loc(where, loc), msg)
    return [f"{loc}: {msg}" for loc, msg in out.items()]


def _over_limits(raw: dict, at: str, max_objects: int | None, max_relationships: int | None):
    """The count problems of a raw scene with more objects or relationships than the limits."""
    out = []
    for kind, limit in (("objects", max_objects), ("relationships", max_relationships)):
        if isinstance(raw.get(kind), list):
            out += over_limit(at, kind, len(raw[kind]), limit)
    return out


def parse_graphs(
    data: Any,
    vocab: Vocab | None = None,
    max_objects: int | None = None,
    max_relationships: int | None = None,
    max_problems: int | None = None,
) -> list[SceneGraph]:
    """Validate one scene (a dict) or a list of scenes; report every problem, located.

    A scene over ``max_objects`` or ``max_relationships`` is reported by its counts alone:
    it must shrink first, and checking its entries one by one (an unknown name costs a fuzzy
    search of the vocabulary) would make a long document's answer long and slow. Scenes after
    the first ``max_problems`` problems (None: no bound) are not checked, and the last line
    says how many. The caller's data is only read. Raises :class:`GraphValidationError`.
    """
    single = isinstance(data, dict)
    scenes = [data] if single else data
    if not isinstance(scenes, list):
        raise GraphValidationError(
            [f"expected a scene (object) or a list of scenes, got {type(data).__name__}"]
        )
    if not scenes:
        raise GraphValidationError(["expected at least one scene, got an empty list"])
    problems: list[str] = []
    graphs: list[SceneGraph] = []
    for i, raw in enumerate(scenes):
        if max_problems is not None and len(problems) >= max_problems:
            rest = len(scenes) - i
            problems.append(f"{rest} more scene(s) not checked: fix the problems above first")
            break
        where = "" if single else f"scenes[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where or 'scene'}: expected an object, got {type(raw).__name__}")
            continue
        found = _over_limits(raw, f"{where}." if where else "", max_objects, max_relationships)
        if found:
            problems += found
            continue
        try:
            typed = _TypedScene.model_validate(raw)
        except ValidationError as err:
            problems += _type_problems(err, where)
            continue
        found = scene_problems(typed, vocab, max_objects, max_relationships, where)
        if found:
            problems += found
            continue
        for note in repeated_triples(typed, where):
            logger.warning("%s", note)
        graphs.append(SceneGraph.model_construct(**typed.model_dump()))
    if problems:
        raise GraphValidationError(problems)
    return graphs


def load_graphs(path: str | Path, **kwargs: Any) -> list[SceneGraph]:
    """Read and validate a JSON file of one scene or a list of scenes."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise GraphValidationError([f"{path}: file not found"]) from e
    except UnicodeDecodeError as e:
        raise GraphValidationError([f"{path}: not a text file"]) from e
    except json.JSONDecodeError as e:
        raise GraphValidationError(
            [f"{path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})"]
        ) from e
    return parse_graphs(data, **kwargs)


def save_graphs(graphs: Sequence[SceneGraph], path: str | Path) -> None:
    Path(path).write_text(json.dumps([g.to_json() for g in graphs], indent=1))


# ---------------------------------------------------------------------------- packing


@dataclass
class GraphBatch:
    """Graphs packed sg2im-style. Per graph: its objects then its ``__image__`` node; its
    triples then one ``(i, __in_image__, image)`` per object.

    objs (O,) long, triples (T, 3) long as (s, p, o) with s, o indexing ``objs``,
    obj_to_img (O,) long, triple_to_img (T,) long, boxes (O, 4) float or None, depth (O,)
    long or None: each node's depth rank, higher is nearer (``depth_ranks`` + 1; 0 for image
    nodes), where the vocabulary has the depth predicates.
    """

    objs: torch.Tensor
    triples: torch.Tensor
    obj_to_img: torch.Tensor
    triple_to_img: torch.Tensor
    num_graphs: int
    boxes: torch.Tensor | None = None
    depth: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> GraphBatch:
        return GraphBatch(
            self.objs.to(device),
            self.triples.to(device),
            self.obj_to_img.to(device),
            self.triple_to_img.to(device),
            self.num_graphs,
            None if self.boxes is None else self.boxes.to(device),
            None if self.depth is None else self.depth.to(device),
        )


def pack_graphs(graphs: Sequence[SceneGraph], vocab: Vocab) -> GraphBatch:
    """Pack validated graphs. Boxes are kept only when every graph has them."""
    import torch

    with_boxes = bool(graphs) and all(g.boxes is not None for g in graphs)
    with_depth = any(vocab.has_predicate(p) for p in DEPTH_PREDICATES)
    image_id, in_image = vocab.object_idx(IMAGE_OBJECT), vocab.pred_idx(IN_IMAGE)
    objs, triples, obj_to_img, triple_to_img, boxes, depth = [], [], [], [], [], []
    for b, g in enumerate(graphs):
        offset = len(objs)
        n = len(g.objects)
        objs += [vocab.object_idx(name) for name in g.objects] + [image_id]
        obj_to_img += [b] * (n + 1)
        rels = [(s + offset, vocab.pred_idx(p), o + offset) for s, p, o in g.relationships]
        rels += [(offset + i, in_image, offset + n) for i in range(n)]
        triples += rels
        triple_to_img += [b] * len(rels)
        if with_boxes:
            boxes += [list(box) for box in g.boxes] + [[0.0, 0.0, 1.0, 1.0]]
        if with_depth:  # ranks from 1, so that the image node (0) is behind everything
            depth += [r + 1 for r in depth_ranks(g)] + [0]
    return GraphBatch(
        objs=torch.tensor(objs, dtype=torch.long),
        triples=torch.tensor(triples, dtype=torch.long).reshape(-1, 3),
        obj_to_img=torch.tensor(obj_to_img, dtype=torch.long),
        triple_to_img=torch.tensor(triple_to_img, dtype=torch.long),
        num_graphs=len(graphs),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) if with_boxes else None,
        depth=torch.tensor(depth, dtype=torch.long) if with_depth else None,
    )


def unpack_graphs(batch: GraphBatch, vocab: Vocab) -> list[SceneGraph]:
    """The inverse of :func:`pack_graphs` (boxes at float32 precision; attributes not packed)."""
    image_id, in_image = vocab.object_idx(IMAGE_OBJECT), vocab.pred_idx(IN_IMAGE)
    objs, triples = batch.objs.tolist(), batch.triples.tolist()
    obj_to_img, triple_to_img = batch.obj_to_img.tolist(), batch.triple_to_img.tolist()
    boxes = None if batch.boxes is None else batch.boxes.tolist()
    graphs = []
    for b in range(batch.num_graphs):
        idx = [i for i, g in enumerate(obj_to_img) if g == b and objs[i] != image_id]
        local = {gi: li for li, gi in enumerate(idx)}
        rels = [
            (local[s], vocab.predicate_names[p], local[o])
            for (s, p, o), g in zip(triples, triple_to_img, strict=True)
            if g == b and p != in_image
        ]
        graphs.append(
            SceneGraph(
                objects=[vocab.object_names[objs[i]] for i in idx],
                relationships=rels,
                boxes=None if boxes is None else [tuple(boxes[i]) for i in idx],
            )
        )
    return graphs
