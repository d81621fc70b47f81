"""The distill stage (LCM with guidance folded in) on tiny SD-1.x components: training,
resume, the student in the pipeline folder, the fast and full samplers."""

import pytest
import torch
from diffusers import LCMScheduler
from safetensors.torch import load_file
from test_training import Crash, crash_on_call, metrics, tiny_config

from sg2image.models.base import build_tiny_base, build_tiny_clip_vision
from sg2image.pipeline import SceneGraphPipeline
from sg2image.training import ConfigError, train
from sg2image.training.distill import Distiller, DistillStage, boundary_scalings, to_x0_eps

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUT = (
    'stages=["layout", "finetune", "distill"]', "layout_encoder.channels=3",
    "layout.max_steps=2", "layout.batch_size=4", "layout.lr_warmup_steps=0",
    "layout_generator.embed_dim=8", "finetune.max_steps=2", "use_mmd=false",
    "use_clip_loss=false", "distill.max_steps=3", "distill.batch_size=4",
    "distill.sample_steps=2", "checkpoint_every=2", "keep_checkpoints=10",
)  # fmt: skip
GRAPHS = [
    {"objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]]},
    {"objects": ["green triangle"], "relationships": []},
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return build_tiny_base(root / "base"), build_tiny_clip_vision(root / "clip")


@pytest.fixture(scope="module")
def distilled(models, tmp_path_factory):
    """A tiny layout model trained through layout, finetune and distill; its run folder."""
    out = tmp_path_factory.mktemp("distilled")
    train(tiny_config(models, out, *LAYOUT))
    return out


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_student_is_saved_in_the_pipeline_and_is_the_default_sampler(distilled):
    pipe = SceneGraphPipeline.from_pretrained(distilled / "pipeline")
    assert pipe.has_student and isinstance(pipe.student_scheduler, LCMScheduler)
    assert pipe.config.fast_steps == 2 and pipe.config.fast_guidance == 2.0
    assert pipe.student_scheduler.config.prediction_type == pipe.scheduler.config.prediction_type
    assert pipe.student_scheduler.config.original_inference_steps == 50
    # Trained: the student left the teacher's weights.
    student, teacher = pipe.student_unet.state_dict(), pipe.unet.state_dict()
    assert student.keys() == teacher.keys()
    assert any(not torch.equal(student[k], teacher[k]) for k in student)
    s_calls, s_hook = count_calls(pipe.student_unet)
    t_calls, t_hook = count_calls(pipe.unet)
    fast = pipe(GRAPHS, generator=gens(2), output_type="np").images
    assert (len(s_calls), len(t_calls)) == (2, 0)  # 2 steps, 2 evaluations, no CFG
    pipe(GRAPHS, num_inference_steps=3, sampler="fast", generator=gens(2), output_type="np")
    assert (len(s_calls), len(t_calls)) == (5, 0)
    full = pipe(GRAPHS, num_inference_steps=3, guidance_scale=2.0, generator=gens(2),
                output_type="np").images  # fmt: skip
    assert (len(s_calls), len(t_calls)) == (5, 3)  # asked for steps and guidance: the full model
    pipe(GRAPHS, sampler="full", generator=gens(2), output_type="np")
    assert len(t_calls) == 3 + 20
    s_hook.remove(), t_hook.remove()
    assert fast.shape == full.shape == (2, 32, 32, 3) and not (fast == full).all()
    again = pipe(GRAPHS, sampler="fast", generator=gens(2), output_type="np").images
    assert (again == fast).all()  # seeded: the same images
    alone = pipe(GRAPHS[1:], generator=gens(1, seed=1), output_type="np").images
    assert abs(alone[0] - fast[1]).max() < 1e-4  # an image depends on its own seed only


def test_sampler_choice_is_checked(distilled):
    pipe = SceneGraphPipeline.from_pretrained(distilled / "pipeline")
    with pytest.raises(ValueError, match="guidance_scale: the fast sampler has guidance 2.0"):
        pipe(GRAPHS, sampler="fast", guidance_scale=3.0)
    with pytest.raises(ValueError, match="sampler: 'turbo' is not one of"):
        pipe(GRAPHS, sampler="turbo")
    pipe.register_to_config(fast_default=False)  # kept, but not the default
    # a layout model: the finish sampler (train's finish_timestep, 39) is then the default;
    # its draft is the teacher's, as this student learnt the whole grid, not the finish
    assert pipe.config.finish_timestep == 39
    assert pipe.config.finish_draft == "student" and pipe.finish_drafter == "teacher"
    assert pipe.resolve_sampler(None, None, None) == ("finish", 2, 2.0)
    assert pipe.resolve_sampler("finish", None, 3.0) == ("finish", 2, 3.0)
    with pytest.raises(ValueError, match="num_inference_steps: 4; the finish sampler takes 2"):
        pipe.resolve_sampler("finish", 4, None)
    assert pipe.resolve_sampler(None, 5, None) == ("full", 5, 2.0)
    assert pipe.resolve_sampler("fast", None, None) == ("fast", 2, 1.0)
    pipe.register_to_config(finish_timestep=None)
    assert pipe.resolve_sampler(None, None, None) == ("full", 20, 2.0)
    with pytest.raises(ValueError, match="this model has no finish sampler"):
        pipe(GRAPHS, sampler="finish")
    pipe.register_modules(student_unet=None, student_scheduler=None)
    assert not pipe.has_student
    with pytest.raises(ValueError, match="this model has no distilled student"):
        pipe(GRAPHS, sampler="fast")
    assert pipe.resolve_sampler(None, None, None) == ("full", 20, 2.0)


def test_distill_resumes_bit_for_bit(models, distilled, tmp_path, monkeypatch):
    out = tmp_path / "stopped"
    resume = tiny_config(models, out, *LAYOUT, "resume=latest")
    with monkeypatch.context() as patch:  # killed in distillation, after fine-tuning
        crash_on_call(patch, DistillStage, 3)
        with pytest.raises(Crash):
            train(resume)
    train(resume)
    for part in ("student_unet", "unet", "graph_encoder", "layout_encoder"):
        a = load_file(next((distilled / "pipeline" / part).glob("*.safetensors")))
        b = load_file(next((out / "pipeline" / part).glob("*.safetensors")))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    rows = [m for m in metrics(out) if m["stage"] == "distill"]
    assert [m["step"] for m in rows] == [1, 2, 3] and rows == [
        m for m in metrics(distilled) if m["stage"] == "distill"
    ]


def test_a_saved_pipeline_is_distilled_alone(models, distilled, tmp_path):
    teacher = f"distill.teacher={distilled / 'pipeline'}"
    cfg = tiny_config(models, tmp_path, 'stages=["distill"]', "distill.max_steps=2",
                      "distill.batch_size=4", teacher)  # fmt: skip
    pipe = SceneGraphPipeline.from_pretrained(train(cfg))
    teacher = SceneGraphPipeline.from_pretrained(distilled / "pipeline")
    for name in ("unet", "graph_encoder", "layout_generator"):  # the teacher's, unchanged
        a, b = getattr(pipe, name).state_dict(), getattr(teacher, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert pipe.has_student and pipe.config.fast_steps == 4
    assert pipe(GRAPHS, generator=gens(2), output_type="np").images.shape == (2, 32, 32, 3)


@pytest.mark.parametrize("boxes", ["given", "predicted"])
def test_student_learns_on_the_boxes_asked_for(models, distilled, tmp_path, monkeypatch, boxes):
    """distill.boxes=predicted: the map comes from the layout stage's boxes, as when sampling."""
    from sg2image.models.layout import LayoutGenerator

    sampled = []
    layout = LayoutGenerator.layout

    def counted(self, *args, **kwargs):
        sampled.append(1)
        return layout(self, *args, **kwargs)

    monkeypatch.setattr(LayoutGenerator, "layout", counted)
    teacher = f"distill.teacher={distilled / 'pipeline'}"
    cfg = tiny_config(models, tmp_path, 'stages=["distill"]', "distill.max_steps=2",
                      "distill.batch_size=4", teacher, f"distill.boxes={boxes}")  # fmt: skip
    train(cfg)
    assert len(sampled) == (2 if boxes == "predicted" else 0)  # one layout per step
    with pytest.raises(ConfigError, match="distill.boxes: 'sampled' is not one of"):
        tiny_config(models, tmp_path, "distill.boxes=sampled")


def test_distill_needs_a_teacher(models, tmp_path):
    with pytest.raises(ConfigError, match="'distill' needs a teacher"):
        tiny_config(models, tmp_path, 'stages=["gca", "distill"]')
    with pytest.raises(ConfigError, match="distill.teacher: a saved pipeline is distilled alone"):
        tiny_config(models, tmp_path, 'stages=["finetune", "distill"]', "distill.teacher=x")
    with pytest.raises(ConfigError, match="distill.ema_decay: 1.5 is out of range"):
        tiny_config(models, tmp_path, "distill.ema_decay=1.5")
    with pytest.raises(ConfigError, match="distill.loss: 'l1' is not one of"):
        tiny_config(models, tmp_path, "distill.loss=l1")


@pytest.mark.parametrize("t", [19, 499, 999])
def test_training_target_is_what_lcm_scheduler_samples(t):
    """The consistency function trained, c_skip x + c_out x0(v), is the denoised sample that
    diffusers' LCMScheduler computes from the same model output: training and sampling agree."""
    sched = LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         prediction_type="v_prediction", timestep_scaling=10.0)  # fmt: skip
    sched.set_timesteps(1)
    x, v = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    a = sched.alphas_cumprod[t]
    x0, _ = to_x0_eps(v, x, a.sqrt(), (1 - a).sqrt(), "v_prediction")
    c_skip, c_out = boundary_scalings(torch.tensor([t]), 10.0)
    ours = c_skip * x + c_out * x0
    sched._step_index = len(sched.timesteps) - 1  # the last step returns the denoised sample
    sched._init_step_index = lambda _t: None
    theirs = sched.step(v, t, x).denoised
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert boundary_scalings(torch.tensor([0]), 10.0) == (1.0, 0.0)


def test_generate_command_defaults_to_the_student_and_gives_the_full_sampler_on_request(
    distilled, tmp_path
):
    import json

    from typer.testing import CliRunner

    from sg2image.cli import app

    graphs = tmp_path / "graphs.json"
    graphs.write_text(json.dumps(GRAPHS))
    model = str(distilled / "pipeline")

    def run(*args):
        return CliRunner().invoke(app, ["generate", str(graphs), "--model", model, *args])

    fast = run("-o", str(tmp_path / "fast"))
    assert fast.exit_code == 0, fast.output
    assert "sampler: fast (2 steps, guidance folded in)" in fast.output
    finish = run("-o", str(tmp_path / "finish"), "--sampler", "finish")
    assert finish.exit_code == 0, finish.output
    assert "sampler: finish (2 steps, guidance 2): an unguided draft, then one guided step at " \
        "t=39 (3 UNet evaluations)" in finish.output
    wrong = run("-o", str(tmp_path / "wrong"), "--sampler", "finish", "--steps", "5")
    assert wrong.exit_code != 0 and "the finish sampler takes 2" in wrong.output
    assert "Traceback" not in wrong.output
    full = run("-o", str(tmp_path / "full"), "--steps", "3", "--guidance", "2")
    assert full.exit_code == 0 and "sampler: full (3 steps, guidance 2)" in full.output
    named = run("-o", str(tmp_path / "named"), "--sampler", "full")
    assert "sampler: full (20 steps, guidance 2)" in named.output
    bad = run("-o", str(tmp_path / "bad"), "--sampler", "fast", "--guidance", "3")
    assert bad.exit_code == 2 and "--guidance: the fast sampler has its guidance" in bad.output
    assert "Traceback" not in bad.output
    both = run("-o", str(tmp_path / "both"), "--sampler", "fast", "--scheduler", "lms")
    assert both.exit_code == 2 and "--scheduler: the fast sampler has its own" in both.output
    help_text = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "200"}).output
    assert "--sampler full" in help_text and "distilled student" in help_text
    assert '"finish"' in help_text and "4 UNet evaluations an image" in help_text


def test_a_finisher_student_learns_and_samples_the_low_timesteps(models, distilled, tmp_path):
    """distill.max_timestep=59: trained at t in {19, 39, 59} only; sampled from the top of the
    schedule, then at those timesteps, as many as asked for (at most 1 + 3)."""
    seen = []
    teacher = f"distill.teacher={distilled / 'pipeline'}"
    cfg = tiny_config(models, tmp_path, 'stages=["distill"]', "distill.max_steps=3",
                      "distill.batch_size=4", teacher, "distill.max_timestep=59",
                      "distill.sample_steps=2")  # fmt: skip
    forward = Distiller.forward

    def recorded(self, x, t, *args):
        seen.append(t.detach().clone())
        return forward(self, x, t, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Distiller, "forward", recorded)
        pipe = SceneGraphPipeline.from_pretrained(train(cfg))
    assert set(torch.cat(seen).tolist()) <= {19, 39, 59} and len(torch.cat(seen)) == 12
    assert pipe.config.fast_max_timestep == 59
    assert [pipe.student_timesteps(k) for k in (1, 2, 3, 4)] == [
        [999], [999, 59], [999, 59, 19], [999, 59, 39, 19]
    ]
    with pytest.raises(ValueError, match="learnt 3 timesteps .<= 59. and takes at most 4"):
        pipe.student_timesteps(5)
    timesteps = []
    hook = pipe.student_unet.register_forward_hook(lambda m, a, o: timesteps.append(int(a[1])))
    pipe(GRAPHS[1:], generator=gens(1), output_type="np")
    hook.remove()
    assert timesteps == [999, 59]
    # The finish sampler's draft is this student's (train's finish_draft="student"): its 2
    # steps, then the fine-tuned UNet's guided step on both CFG halves.
    assert pipe.config.finish_draft == "student" and pipe.finish_schedule() == [999, 59, 39]
    pipe.register_to_config(fast_default=False)
    assert pipe.resolve_sampler(None, None, None) == ("finish", 3, 2.0)
    with pytest.raises(ValueError, match="num_inference_steps: 2; the finish sampler takes 3"):
        pipe.resolve_sampler("finish", 2, None)
    calls = []
    hooks = [m.register_forward_hook(lambda m, a, o, who=who: calls.append(
                 (who, a[0].shape[0], int(a[1].flatten()[0]))))
             for who, m in (("student", pipe.student_unet), ("teacher", pipe.unet))]  # fmt: skip
    drafted = pipe(GRAPHS, generator=gens(2), output_type="np").images
    assert calls == [("student", 2, 999), ("student", 2, 59), ("teacher", 4, 39)]
    alone = pipe(GRAPHS[1:], generator=gens(1, seed=1), output_type="np").images
    assert abs(alone[0] - drafted[1]).max() < 1e-4  # an image depends on its own seed only
    pipe.register_to_config(finish_draft="teacher")
    calls.clear()
    own = pipe(GRAPHS, generator=gens(2), output_type="np").images
    assert calls == [("teacher", 2, 999), ("teacher", 4, 39)]
    assert not (own == drafted).all()
    for h in hooks:
        h.remove()
    import json

    index = tmp_path / "pipeline" / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "finish_draft": "studnet"}))
    with pytest.raises(ValueError, match="finish_draft: 'studnet' is not 'student' or 'teacher'"):
        SceneGraphPipeline.from_pretrained(tmp_path / "pipeline")
    with pytest.raises(ValueError, match="distill.max_timestep: 5 is below the first grid"):
        train(tiny_config(models, tmp_path / "low", 'stages=["distill"]', teacher,
                          "distill.batch_size=4", "distill.max_timestep=5"))  # fmt: skip


def test_finish_sampler_drafts_unguided_then_takes_one_guided_step(distilled):
    """sampler="finish": the fine-tuned UNet at t=999 on the conditional rows only, then at
    the finish timestep on both CFG halves (3 evaluations an image); seeded and independent
    of the batch; the guidance scale is the finishing step's."""
    pipe = SceneGraphPipeline.from_pretrained(distilled / "pipeline")
    pipe.register_to_config(fast_default=False)
    calls = []
    hook = pipe.unet.register_forward_hook(
        lambda m, a, o: calls.append((a[0].shape[0], a[1].flatten()[0].item()))
    )
    images = pipe(GRAPHS, generator=gens(2), output_type="np").images  # the default
    assert calls == [(2, 999), (4, 39)]
    again = pipe(GRAPHS, sampler="finish", generator=gens(2), output_type="np").images
    alone = pipe(GRAPHS[1:], sampler="finish", generator=gens(1, seed=1), output_type="np")
    stronger = pipe(GRAPHS, sampler="finish", guidance_scale=4.0, generator=gens(2),
                    output_type="np").images  # fmt: skip
    hook.remove()
    assert (again == images).all() and abs(alone.images[0] - images[1]).max() < 1e-4
    assert not (stronger == images).all()
