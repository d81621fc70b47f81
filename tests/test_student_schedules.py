"""benchmarks/student_schedules.py: its variants parse as written, and each samples with the
UNet evaluations it says (a tiny layout model with a copy of its UNet as the student)."""

import copy

import pytest
import torch
from serve_fixtures import tiny_layout_pipeline
from test_shapes_base import _benchmark_script

from sg2image.data.shapes import make_split
from sg2image.training.config import DistillConfig
from sg2image.training.distill import student_scheduler

schedules = _benchmark_script("student_schedules")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_variants_parse_and_bad_ones_say_why():
    assert schedules.parse_variant("student 999,259 + finish 59") == {
        "drafter": "student", "timesteps": [999, 259], "finish": 59
    }  # fmt: skip
    assert schedules.parse_variant("teacher 999") == {"drafter": "teacher", "timesteps": [999]}
    assert schedules.parse_variant("full") == {"drafter": "full"}
    assert schedules.parse_variant("teacher 999 + finish 39 guidance 1.5") == {
        "drafter": "teacher", "timesteps": [999], "finish": 39, "finish_guidance": 1.5
    }  # fmt: skip
    with pytest.raises(ValueError, match="'\\+ finish T guidance G'"):
        schedules.parse_variant("teacher 999 + finish 39 scale 1.5")
    with pytest.raises(ValueError, match="starts with 'student' or 'teacher'"):
        schedules.parse_variant("pupil 999")
    with pytest.raises(ValueError, match="expected '\\+ finish T'"):
        schedules.parse_variant("student 999 + polish 59")


def test_each_variant_takes_the_evaluations_it_names(tmp_path):
    pipe = tiny_layout_pipeline(tmp_path)
    pipe.register_to_config(resolution=64)
    lcm = student_scheduler(pipe.scheduler.config, DistillConfig())
    pipe.set_student(copy.deepcopy(pipe.unet), lcm, 2, 2.0)
    pipe.set_progress_bar_config(disable=True)
    graphs = make_split("val", n=2)
    rows = {
        text: schedules.run(pipe, graphs, schedules.parse_variant(text))
        for text in ("student 999,59", "teacher 999 + finish 39", "student 999,259 + finish 59")
    }
    assert [r["unet_evals_per_image"] for r in rows.values()] == [2, 3, 4]
    for r in rows.values():
        assert 0 <= r["object_recall"] <= 1 and r["missed_objects"] >= 0
    with torch.no_grad():  # seeded: the same images, the same scores
        again = schedules.run(pipe, graphs, schedules.parse_variant("teacher 999 + finish 39"))
    assert again["object_recall"] == rows["teacher 999 + finish 39"]["object_recall"]


def test_finish_guidance_and_fid(tmp_path, tiny_sd):
    """'guidance G' changes the finish's images (so its FID); --clip adds FID and KID of the
    images against the renders of the same graphs."""
    from sg2image.eval.metrics import ClipImageFeatures, features, to_uint8_batch
    from sg2image.models.base import load_clip_vision

    pipe = tiny_layout_pipeline(tmp_path)
    pipe.register_to_config(resolution=64)
    pipe.set_progress_bar_config(disable=True)
    graphs = make_split("val", n=4)
    extractor = ClipImageFeatures(load_clip_vision(tiny_sd[1]))
    real = features(extractor, to_uint8_batch([schedules.render(g) for g in graphs]))
    rows = [schedules.run(pipe, graphs, schedules.parse_variant(f"teacher 999 + finish 39{g}"),
                          fid=(extractor, real))
            for g in ("", " guidance 2")]  # fmt: skip
    assert rows[0]["fid"] == rows[1]["fid"] > 0 and rows[0]["kid"] == rows[1]["kid"]  # 2: default
    images = [
        schedules.draft_and_finish(pipe, graphs, [torch.Generator().manual_seed(0) for _ in graphs],
                                   schedules.parse_variant(f"teacher 999 + finish 39{g}"))
        for g in (" guidance 2", " guidance 8")
    ]  # fmt: skip
    assert (images[0] != images[1]).any()
