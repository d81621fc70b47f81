"""benchmarks/layout_fid.py: its variants parse as written, and a variant's refinement
setting reaches the boxes and is put back afterwards (the shipped model's layout stage)."""

import pytest
from test_shapes_base import _benchmark_script

from sg2image import SHAPES_MODEL
from sg2image.data.shapes import make_split
from sg2image.pipeline import load_pipeline

layout_fid = _benchmark_script("layout_fid")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_variants_parse_and_bad_ones_say_why():
    assert layout_fid.parse_variant("default") == {"refine": True}
    assert layout_fid.parse_variant("raw steps 8") == {"refine": False, "steps": 8}
    assert layout_fid.parse_variant("relax 1 min_gap 0.05") == {
        "refine": True, "refine_settings": {"relax": 1.0, "min_gap": 0.05}
    }  # fmt: skip
    with pytest.raises(ValueError, match="expected default, raw"):
        layout_fid.parse_variant("relax")
    with pytest.raises(ValueError, match="expected default, raw"):
        layout_fid.parse_variant("square 0")


def test_a_refinement_setting_moves_the_boxes_and_is_restored():
    pipe = load_pipeline(SHAPES_MODEL)
    graphs = make_split("val", n=16)
    before = dict(pipe.layout_generator.config.refine)
    shipped = layout_fid.layouts_of(pipe, graphs, layout_fid.parse_variant("default"))
    raw = layout_fid.layouts_of(pipe, graphs, layout_fid.parse_variant("raw"))
    overshoot = layout_fid.layouts_of(pipe, graphs, layout_fid.parse_variant("relax 2"))
    assert pipe.layout_generator.config.refine == before  # put back
    assert [len(g.boxes) for g in shipped] == [len(g.objects) for g in graphs]
    assert [g.boxes for g in shipped] != [g.boxes for g in raw]  # refined
    assert [g.boxes for g in shipped] != [g.boxes for g in overshoot]  # relax reached them
    again = layout_fid.layouts_of(pipe, graphs, layout_fid.parse_variant("default"))
    assert [g.boxes for g in again] == [g.boxes for g in shipped]  # seeded
