import copy
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sg2image.graph import (
    IMAGE_OBJECT,
    IN_IMAGE,
    GraphValidationError,
    SceneGraph,
    Vocab,
    load_graphs,
    pack_graphs,
    parse_graphs,
    save_graphs,
    unpack_graphs,
)

VOCAB = Vocab.build(["sky", "grass", "sheep", "tree", "person"], ["above", "below", "standing on"])


def problems_of(data, **kw):
    with pytest.raises(GraphValidationError) as info:
        parse_graphs(data, **kw)
    return info.value.problems


def test_valid_scene_and_list():
    scene = {"objects": ["sky", "grass"], "relationships": [[0, "above", 1]]}
    (g,) = parse_graphs(scene, vocab=VOCAB)
    assert g.objects == ["sky", "grass"] and g.relationships == [(0, "above", 1)]
    assert len(parse_graphs([scene, scene], vocab=VOCAB)) == 2
    assert g.to_json() == scene


def test_every_problem_is_reported_with_its_location():
    bad = [
        {"objects": ["sky"]},
        {
            "objects": ["skyy", "", "sheep"],
            "relationships": [[0, "abov", 5], [2, "above", 2], [0, "above", 2], [0, "above", 2]],
        },
    ]
    problems = problems_of(bad, vocab=VOCAB)
    assert problems == [
        "scenes[1].objects[0]: unknown object 'skyy' (did you mean 'sky'?)",
        "scenes[1].objects[1]: empty label",
        "scenes[1].relationships[0]: object index 5 out of range (3 objects)",
        "scenes[1].relationships[0]: unknown predicate 'abov' (did you mean 'above'?)",
        "scenes[1].relationships[1]: object 2 related to itself",
    ]  # the repeated triple (relationships[3]) is a warning, not a problem: test_coco.py


@pytest.mark.parametrize(
    "data, expected",
    [
        ("sky", "expected a scene (object) or a list of scenes, got str"),
        ([], "expected at least one scene, got an empty list"),
        ([3], "scenes[0]: expected an object, got int"),
        ({"objects": "sky"}, "objects: Input should be a valid list"),
        ({"objects": []}, "objects: a scene needs at least one object"),
        ({"object": ["sky"]}, "object: unknown field (did you mean 'objects'?)"),
        ({"objects": ["sky"], "relationships": [[0, 1, 0]]}, "relationships[0][1]: Input should"),
        ({"objects": ["sky", "sky"], "relationships": [[True, "above", 1]]}, "relationships[0][0]"),
        (
            {"objects": ["sky", "grass"], "relationships": [[-1, "above", 1]]},
            "relationships[0]: subject index -1",
        ),
        ({"objects": ["sky"], "boxes": [[0, 0, "a", 1]]}, "boxes[0][2]: expected a number"),
        ({"objects": ["sky"], "boxes": [[0.5, 0, 0.2, 1]]}, "boxes[0]: must be x0 < x1"),
        ({"objects": ["sky"], "boxes": []}, "boxes: 0 entries for 1 objects"),
        ({"objects": [IMAGE_OBJECT]}, "objects[0]: '__image__' is reserved"),
        (
            {"objects": ["a", "b"], "relationships": [[0, IN_IMAGE, 1]]},
            "relationships[0]: '__in_image__' is reserved",
        ),
    ],
)
def test_single_problem_messages(data, expected):
    problems = problems_of(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_limits():
    scene = {
        "objects": ["sky", "grass", "sheep"],
        "relationships": [[0, "above", 1], [2, "below", 0]],
    }
    assert problems_of(scene, max_objects=2, max_relationships=1) == [
        "objects: 3 objects, this model accepts at most 2",
        "relationships: 2 relationships, this model accepts at most 1",
    ]


def test_over_limit_scene_is_reported_by_its_counts_alone():
    # 20,000 misspelt names: their count, not 20,000 fuzzy searches of the vocabulary
    vocab = Vocab([IMAGE_OBJECT, "red circle"], [IN_IMAGE, "left of"])
    assert problems_of({"objects": ["red circl"] * 20_000}, vocab=vocab, max_objects=6) == [
        "objects: 20000 objects, this model accepts at most 6"
    ]


def test_max_problems_bounds_the_scenes_checked():
    vocab = Vocab([IMAGE_OBJECT, "red circle"], [IN_IMAGE, "left of"])
    doc = [{"objects": ["red circl"]}] * 3000
    problems = problems_of(doc, vocab=vocab, max_problems=50)
    assert len(problems) == 51
    assert problems[49].startswith("scenes[49].objects[0]: unknown object 'red circl'")
    assert problems[50] == "2950 more scene(s) not checked: fix the problems above first"
    assert len(problems_of(doc, vocab=vocab)) == 3000  # unbounded: every scene
    # under the bound, the same lines as without it
    small = [
        {"objects": ["red circel"], "colour": 1},
        {"objects": ["red circle"]},
        {"objects": ["red circle", "red circle"], "relationships": [[0, "abve", 5]]},
        "text",
    ]
    assert problems_of(small, vocab=vocab, max_problems=50) == problems_of(small, vocab=vocab)
    assert len(problems_of(small, vocab=vocab)) == 4
    # the bound is checked between scenes: the scene that reaches it is reported whole
    assert problems_of(small, vocab=vocab, max_problems=1) == [
        *problems_of(small[:1], vocab=vocab),
        "3 more scene(s) not checked: fix the problems above first",
    ]


def test_caller_data_never_mutated():
    scene = {
        "objects": ["sky", "grass"],
        "relationships": [[0, "above", 1]],
        "boxes": [[0, 0, 1, 0.5], [0, 0.5, 1, 1]],
    }
    before = copy.deepcopy(scene)
    graphs = parse_graphs(scene, vocab=VOCAB)
    pack_graphs(graphs, VOCAB)
    pack_graphs(graphs, VOCAB)
    assert scene == before
    assert len(graphs[0].objects) == 2  # no __image__ appended to our own copy either


def test_direct_construction_validates():
    with pytest.raises(
        GraphValidationError, match=r"relationships\[0\]: object index 3 out of range"
    ):
        SceneGraph(objects=["a"], relationships=[(0, "x", 3)])


def test_load_graphs_errors(tmp_path):
    p = tmp_path / "g.json"
    p.write_text("{not json")
    with pytest.raises(GraphValidationError, match="not JSON"):
        load_graphs(p)
    with pytest.raises(GraphValidationError, match="file not found"):
        load_graphs(tmp_path / "missing.json")
    graphs = parse_graphs({"objects": ["sky", "grass"], "relationships": [[0, "above", 1]]})
    save_graphs(graphs, p)
    assert load_graphs(p) == graphs


def test_vocab_roundtrip_and_sg2im_keys(tmp_path):
    VOCAB.save(tmp_path / "vocab.json")
    data = json.loads((tmp_path / "vocab.json").read_text())
    assert data["object_name_to_idx"][IMAGE_OBJECT] == 0 and data["pred_idx_to_name"][0] == IN_IMAGE
    assert Vocab.load(tmp_path / "vocab.json") == VOCAB
    with pytest.raises(ValueError, match="duplicate"):
        Vocab.build(["a", "a"], [])


def test_pack_layout():
    graphs = parse_graphs(
        [
            {"objects": ["sky", "grass"], "relationships": [[0, "above", 1]]},
            {"objects": ["sheep"]},
        ],
        vocab=VOCAB,
    )
    b = pack_graphs(graphs, VOCAB)
    img, sky, grass, sheep = (VOCAB.object_idx(n) for n in (IMAGE_OBJECT, "sky", "grass", "sheep"))
    assert b.objs.tolist() == [sky, grass, img, sheep, img]
    assert b.obj_to_img.tolist() == [0, 0, 0, 1, 1]
    above = VOCAB.pred_idx("above")
    assert b.triples.tolist() == [[0, above, 1], [0, 0, 2], [1, 0, 2], [3, 0, 4]]
    assert b.triple_to_img.tolist() == [0, 0, 0, 1]
    assert b.boxes is None and b.num_graphs == 2


# ---------------------------------------------------------------- property tests

NAMES = VOCAB.object_names[1:]
PREDS = VOCAB.predicate_names[1:]


@st.composite
def scene_graphs(draw, with_boxes=None):
    n = draw(st.integers(1, 6))
    objects = draw(st.lists(st.sampled_from(NAMES), min_size=n, max_size=n))
    pairs = [(s, o) for s in range(n) for o in range(n) if s != o]
    rels = draw(
        st.lists(st.tuples(st.sampled_from(pairs or [(0, 0)]), st.sampled_from(PREDS)), max_size=8)
    )
    rels = list(dict.fromkeys((s, p, o) for (s, o), p in rels if s != o))
    boxes = None
    if with_boxes if with_boxes is not None else draw(st.booleans()):
        coord = st.integers(0, 64).map(lambda v: v / 64)  # exact in float32
        boxes = []
        for _ in range(n):
            x0, x1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
            y0, y1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
            boxes.append((x0, y0, x1, y1))
    return SceneGraph(objects=objects, relationships=rels, boxes=boxes)


@settings(max_examples=150, deadline=None)
@given(st.lists(scene_graphs(), min_size=1, max_size=5))
def test_pack_unpack_roundtrip(graphs):
    batch = pack_graphs(graphs, VOCAB)
    assert batch.objs.shape[0] == sum(len(g.objects) + 1 for g in graphs)
    assert batch.triples.shape == (sum(len(g.relationships) + len(g.objects) for g in graphs), 3)
    assert torch.all(batch.obj_to_img[batch.triples[:, 0]] == batch.triple_to_img)
    assert torch.all(batch.obj_to_img[batch.triples[:, 2]] == batch.triple_to_img)
    back = unpack_graphs(batch, VOCAB)
    if all(g.boxes is not None for g in graphs):
        assert back == graphs
    else:
        assert [(g.objects, g.relationships) for g in back] == [
            (g.objects, g.relationships) for g in graphs
        ]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 8)
    | st.floats(allow_nan=True)
    | st.text(max_size=6)
    | st.sampled_from(NAMES + PREDS),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["objects", "relationships", "boxes", "attributes", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_validator_never_crashes_on_garbage(data):
    before = copy.deepcopy(data)
    try:
        graphs = parse_graphs(data, vocab=VOCAB, max_objects=5)
    except GraphValidationError as e:
        assert e.problems and all(
            isinstance(p, str) and ": " in p or "expected" in p for p in e.problems
        )
    else:
        assert graphs and all(isinstance(g, SceneGraph) for g in graphs)
        pack_graphs(graphs, VOCAB)
    assert repr(data) == repr(before)


@settings(max_examples=150, deadline=None)
@given(scene_graphs(with_boxes=False), st.integers(0, 2), st.integers(-3, 12))
def test_validator_locates_a_corrupted_index(graph, which, bad):
    data = graph.to_json()
    data["relationships"].append([0, "above", 0])
    data["relationships"][-1][which] = bad if which != 1 else "nope"
    n = len(data["objects"])
    k = len(data["relationships"]) - 1
    if which != 1 and 0 <= bad < n and bad != 0:
        return  # still a valid relation (possibly a duplicate)
    problems = problems_of(data, vocab=VOCAB)
    assert any(p.startswith(f"relationships[{k}]") for p in problems), problems


def test_pack_carries_depth_ranks_only_for_a_vocabulary_with_depth():
    """pack_graphs gives each node its depth rank + 1 (the image node 0, behind all) when
    the vocabulary has the depth predicates, so the layout map can paint back to front."""
    from sg2image.data.shapes import shapes_vocab

    g = SceneGraph.model_validate(
        {"objects": ["red circle", "blue square", "green triangle"],
         "relationships": [[0, "in front of", 1], [2, "behind", 0], [1, "left of", 2]]}
    )  # fmt: skip
    batch = pack_graphs([g, g], shapes_vocab("depth"))
    assert batch.depth.tolist() == [2, 1, 1, 0] * 2
    assert batch.to("cpu").depth.tolist() == batch.depth.tolist()
    plain = SceneGraph.model_validate({"objects": g.objects, "relationships": [[1, "left of", 2]]})
    assert pack_graphs([plain], shapes_vocab()).depth is None
