"""The Shapes base: tokenizer, tiny CLIP / VAE / UNet, and a tiny end-to-end training run
whose folders load with load_base / load_clip_vision and sample through SceneGraphPipeline."""

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from tiny_settings import TINY_ENCODER
from transformers import AutoTokenizer, CLIPTextModel, CLIPVisionModelWithProjection

from sg2image.data.shapes import OBJECT_NAMES, caption, generate_scene, shapes_vocab
from sg2image.graph import label_prompt
from sg2image.models.base import load_base, load_clip_vision
from sg2image.models.shapes_base import (
    BOS,
    EOS,
    MAX_LENGTH,
    UNK,
    ClipSize,
    UnetSize,
    VaeSize,
    build_clip,
    build_tokenizer,
    build_unet,
    build_vae,
    clip_pixels,
    sample_base,
    save_clip_folder,
    shapes_words,
)
from sg2image.pipeline import pipeline_from_base
from sg2image.training import base_model
from sg2image.training.base_model import ShapesBaseConfig, train_shapes_base


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_tokenizer_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "a red circle to the left of a blue square, a cyan triangle and a green circle"
    assert again(text).input_ids == tok(text).input_ids
    ids = again(text).input_ids
    assert ids[0] == again.bos_token_id and ids[-1] == again.eos_token_id
    assert again.unk_token_id not in ids
    assert again.decode(ids, skip_special_tokens=True) == text
    assert again.model_max_length == MAX_LENGTH
    assert (again.bos_token, again.eos_token, again.unk_token) == (BOS, EOS, UNK)
    assert again.eos_token_id != 2  # CLIPTextModel's legacy pooling
    padded = again(["", "red circle"], padding="max_length", max_length=MAX_LENGTH).input_ids
    assert padded[0][:3] == [again.bos_token_id, again.eos_token_id, again.pad_token_id]
    assert len(padded[1]) == MAX_LENGTH
    assert again("a mauve hexagon").input_ids.count(again.unk_token_id) == 2


def test_every_caption_and_label_prompt_fits(tok):
    vocab = set(tok.get_vocab())
    assert set(shapes_words()) <= vocab
    longest_names = sorted(OBJECT_NAMES, key=len)[-5:]
    prompt = tok(label_prompt(longest_names)).input_ids
    assert len(prompt) == 5 * 2 + 4 + 2 <= MAX_LENGTH
    # worst case: 5 objects, one relation phrase ("to the right of"), 2 commas and "and"
    assert 5 * 3 + 4 + 3 + 2 <= MAX_LENGTH
    rng = np.random.default_rng(0)
    for i in range(300):
        ids = tok(caption(generate_scene("train", i), rng)).input_ids
        assert tok.unk_token_id not in ids and len(ids) <= 24


def test_depth_words_are_appended_and_plain_ids_stay_the_shipped_models():
    from sg2image import SHAPES_MODEL

    shipped = AutoTokenizer.from_pretrained(SHAPES_MODEL / "tokenizer").get_vocab()
    plain, depth = build_tokenizer().get_vocab(), build_tokenizer(world="depth").get_vocab()
    # the plain world's tokenizer is the shipped model's, word for word and id for id (a
    # larger vocabulary would change the initialisation of the preset's whole CLIP)
    assert plain == shipped
    assert {w: depth[w] for w in shipped} == shipped  # the depth words come after
    assert sorted(set(depth) - set(shipped), key=depth.get) == ["in", "front", "behind"]
    assert shapes_words("depth")[: len(shapes_words())] == shapes_words()
    tok = build_tokenizer(world="depth")
    rng = np.random.default_rng(0)
    for i in range(300):
        ids = tok(caption(generate_scene("train", i, "depth"), rng)).input_ids
        assert tok.unk_token_id not in ids and len(ids) <= MAX_LENGTH
    with pytest.raises(ValueError, match="unknown Shapes world 'deep'"):
        shapes_words("deep")


def test_tiny_components_and_clip_folder(tok, tmp_path):
    clip = build_clip(tok, ClipSize(32, 1, 32, 1, 2, 16, 16))
    save_clip_folder(tmp_path, clip, tok)
    text = CLIPTextModel.from_pretrained(tmp_path)
    vision = CLIPVisionModelWithProjection.from_pretrained(tmp_path)
    ids = tok(["a red circle", ""], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(text(ids.input_ids)[0], clip.text_model(ids.input_ids)[0])
        x = clip_pixels(torch.rand(2, 3, 64, 64) * 2 - 1)
        want = clip.visual_projection(clip.vision_model(pixel_values=x).pooler_output)
        torch.testing.assert_close(vision(pixel_values=x).image_embeds, want)
    pre = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == [0.5] * 3 and pre["crop_size"] == {"height": 64, "width": 64}
    vae = build_vae(VaeSize((8, 16, 16)))
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
    assert z.shape == (1, 4, 16, 16)
    unet = build_unet(UnetSize((16, 32), (False, True), 1, 8), text_dim=32, sample_size=16)
    with torch.no_grad():
        out = unet(z, 10, encoder_hidden_states=torch.zeros(1, MAX_LENGTH, 32)).sample
    assert out.shape == z.shape


@pytest.fixture(scope="module")
def trained(tiny_shapes_run):
    """The tiny chain's base (ShapesBaseConfig.tiny(), trained by train_shapes_base): shared,
    read only."""
    out = tiny_shapes_run[0] / "shapes-base"
    return out, out / "base", out / "clip"


def test_tiny_run_writes_loadable_folders(trained):
    out, base_dir, clip_dir = trained
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"pool", "clip", "vae", "unet"}
    assert report["pool"]["scenes"] == 64
    for part, steps in (("clip", 2), ("vae", 2 + 2), ("unet", 4)):  # vae: + refine steps
        assert report[part]["train_steps"] == steps and report[part]["samples_per_s"] > 0
    assert not (out / "unet_checkpoint.pt").exists()
    base = load_base(base_dir)
    assert base.vae is not None and base.unet.config.cross_attention_dim == 32
    assert base.vae.config.scaling_factor != 0.18215  # measured, not SD's
    assert base.tokenizer.model_max_length == MAX_LENGTH
    clip = load_clip_vision(clip_dir)
    assert clip.config.projection_dim == 16
    images = sample_base(base, ["a red circle", "a blue square and a cyan circle"], steps=2)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    torch.manual_seed(0)
    pipe = pipeline_from_base(base, shapes_vocab(), TINY_ENCODER, dict(max_triples=8))
    pipe.set_progress_bar_config(disable=True)
    gen = [torch.Generator().manual_seed(i) for i in range(2)]
    res = pipe([generate_scene("val", 0), generate_scene("val", 1)], num_inference_steps=2,
               generator=gen, output_type="np")  # fmt: skip
    assert res.images.shape == (2, 64, 64, 3) and np.isfinite(res.images).all()
    # the folder is a StableDiffusionPipeline too
    from diffusers import StableDiffusionPipeline

    sd = StableDiffusionPipeline.from_pretrained(base_dir)
    sd.set_progress_bar_config(disable=True)
    image = sd(["a red circle"], num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 64, 64, 3)


def test_finished_parts_are_skipped_and_unet_resumes_exactly(trained, tmp_path, monkeypatch):
    out, base_dir, _ = trained
    for name in ("clip", "parts", "logs"):
        shutil.copytree(out / name, tmp_path / name)
    cfg = ShapesBaseConfig.tiny()
    cfg.eval_size = 0
    monkeypatch.setattr(base_model, "train_clip", None)  # finished parts must not run again
    monkeypatch.setattr(base_model, "train_vae", None)

    class Crash(base_model.MetricsLog):
        def write(self, row):
            if row["global_step"] == 3:
                raise KeyboardInterrupt  # killed after the checkpoint at step 2
            super().write(row)

    monkeypatch.setattr(base_model, "MetricsLog", Crash)
    with pytest.raises(KeyboardInterrupt):
        train_shapes_base(tmp_path, cfg)
    assert (tmp_path / "unet_checkpoint.pt").is_file() and not (tmp_path / "base").exists()
    monkeypatch.undo()
    monkeypatch.setattr(base_model, "train_clip", None)
    monkeypatch.setattr(base_model, "train_vae", None)
    new_base, _ = train_shapes_base(tmp_path, cfg)
    a, b = load_base(base_dir).unet.state_dict(), load_base(new_base).unet.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    log = [json.loads(ln) for ln in (tmp_path / "logs" / "unet.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in log] == [1, 2, 3, 4]
    assert train_shapes_base(tmp_path, cfg)[0] == new_base  # complete: returns at once


def test_gaussian_blur_keeps_mass_and_constants():
    x = torch.zeros(1, 2, 9, 9)
    x[0, :, 4, 4] = 1.0
    assert torch.equal(base_model.gaussian_blur(x, 0.0), x)
    y = base_model.gaussian_blur(x, 1.0)
    assert y.shape == x.shape and y[0, 0, 4, 4] < 0.2 and y[0, 0, 4, 5] > 0.05
    torch.testing.assert_close(y.sum((2, 3)), torch.ones(1, 2))
    flat = torch.full((1, 4, 5, 5), 0.3)  # edges replicate: a constant stays constant
    torch.testing.assert_close(base_model.gaussian_blur(flat, 2.0), flat)


def test_factor_two_vae_with_latent_blur(tmp_path):
    # the UNet's latent size follows the VAE's downsampling (64 / 2 = 32), and the
    # blurred-latent decoder training runs
    cfg = ShapesBaseConfig.tiny()
    cfg.eval_size = 0
    cfg.vae.size = VaeSize((8, 16))
    cfg.vae.latent_blur, cfg.vae.latent_blur_prob = 1.0, 1.0
    base_dir, _ = train_shapes_base(tmp_path, cfg)
    base = load_base(base_dir)
    assert base.unet.config.sample_size == 32
    log = [json.loads(ln) for ln in (tmp_path / "logs" / "vae.jsonl").read_text().splitlines()]
    own = [r for r in log if "phase" not in r]  # then the decoder's speck refinement
    assert len(own) == cfg.vae.steps and all(np.isfinite(r["loss"]) for r in log)
    assert len(log) - len(own) == cfg.vae.refine_steps
    images = sample_base(base, ["a red circle and a blue square"], steps=2)
    assert images.shape == (1, 64, 64, 3)


def _benchmark_script(name: str):
    """A script of benchmarks/ (not a package) imported as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_base_probe_script(trained, tmp_path):
    # benchmarks/shapes_base_probe.py on the tiny base: fractions per object count, and an
    # object found implies its colour found
    module = _benchmark_script("shapes_base_probe")
    _, base_dir, _ = trained
    result = module.probe(base_dir, prompts_per_count=2)
    assert set(result) == {"1_objects", "2_objects", "3_objects"}
    for r in result.values():
        assert 0 <= r["object_found"] <= r["colour_found"] <= 1
    module.main([str(base_dir), "--name", "tiny", "--prompts", "2", "--results", str(tmp_path)])
    saved = json.loads((tmp_path / "base_variants" / "probe-tiny.json").read_text())
    assert saved["1_objects"] == result["1_objects"]  # seeded: the same numbers again


def test_base_variants_refuse_a_folder_of_another_variant(tmp_path):
    module = _benchmark_script("shapes_base_variants")
    default = module._plain(ShapesBaseConfig())
    saved = module._plain(ShapesBaseConfig())
    del saved["vae"]["latent_blur"]  # a folder written before the field existed: it ran 0
    assert module._differences(saved, default, default) == []
    blur = ShapesBaseConfig()
    module.VARIANTS["latent-blur"](blur)
    assert module._differences(saved, module._plain(blur), default) == [
        "vae.latent_blur: folder has 0.0, variant 1.0"
    ]
    saved["unet"]["steps"] = 9000
    assert module._differences(saved, default, default) == [
        "unet.steps: folder has 9000, variant 3000"
    ]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="holds another variant: unet.steps"):
        module.main(["default", "--out", str(tmp_path)])


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_vae_decoder_refinement_leaves_the_encoder_bit_exact(tmp_path):
    # the phase of VaePart.refine_steps: the decoder changes, the encoder (and so the
    # latents and the scaling factor every UNet is trained with) does not, bit for bit
    from sg2image.training.vae_refine import refine_vae_decoder

    pool = base_model.Pool("train", 16)
    vae = build_vae(VaeSize((8, 16, 16)))
    encoder, quant, decoder = _state(vae.encoder), _state(vae.quant_conv), _state(vae.decoder)
    refine_vae_decoder(vae, pool, steps=2, batch_size=4, warmup=1)
    for before, module in ((encoder, vae.encoder), (quant, vae.quant_conv)):
        for k, v in module.state_dict().items():
            assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, decoder[k]) for k, v in vae.decoder.state_dict().items())
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())

    # inside train_vae: the same encoder and scaling factor as without the phase
    plain, refined = ShapesBaseConfig.tiny(), ShapesBaseConfig.tiny()
    refined.vae.refine_steps = 2
    vaes = []
    for name, cfg in (("plain", plain), ("refined", refined)):
        log = base_model.MetricsLog(tmp_path / f"{name}.jsonl", True, None)
        vaes.append(base_model.train_vae(cfg, pool, log, torch.device("cpu")))
    for k, v in vaes[0].encoder.state_dict().items():
        assert torch.equal(v, vaes[1].encoder.state_dict()[k]), k
    assert vaes[0].config.scaling_factor == vaes[1].config.scaling_factor
    rows = [json.loads(ln) for ln in (tmp_path / "refined.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in rows] == [1, 2, 3, 4]
    assert [r.get("phase") for r in rows[2:]] == ["refine", "refine"]


def test_speck_counts():
    from sg2image.data.shapes import COLOURS, render
    from sg2image.eval.specks import speck_counts

    graph = generate_scene("test", 0)
    image = render(graph)
    clean = speck_counts([image], [graph], [image])
    assert clean["off_colour_pixels"] == clean["far_pixels"] == 0
    missing = next(c for c in COLOURS if all(not o.startswith(c) for o in graph.objects))
    specked = image.copy()
    specked[0, :4] = COLOURS[missing]  # rows 0-1 are always background
    counts = speck_counts([specked], [graph], [image])
    assert counts["off_colour_pixels"] == 4 and counts["off_colour_specks"] == 1
    assert counts["images_with_off_colour"] == counts["images_with_far"] == 1
    assert counts["far_pixels"] == 4


def test_vae_specks_script(tmp_path):
    module = _benchmark_script("vae_specks")
    torch.manual_seed(0)
    build_vae(VaeSize((8, 16, 16))).save_pretrained(tmp_path / "vae")
    argv = [str(tmp_path / "vae"), "--n", "3", "--steps", "1", "--pool", "8"]
    result = module.main([*argv, "--out", str(tmp_path / "refined"), "--results", str(tmp_path)])
    saved = json.loads((tmp_path / "vae_specks.json").read_text())
    assert saved["before"] == result["before"]
    assert saved["after"]["reconstructed"]["images"] == 3 and saved["refine"]["steps"] == 1
    assert 0 <= saved["after"]["reconstructed"]["object_recall"] <= 1
    assert (tmp_path / "refined" / "config.json").is_file()


def test_vae_specks_script_on_generated_latents(tmp_path):
    module = _benchmark_script("vae_specks")
    shipped = AutoencoderKL.from_pretrained(module.SHIPPED / "vae")
    latents = module.pipeline_latents(2)
    assert latents.shape == (2, 4, 16, 16)
    counts = module.measure_generated(shipped, latents)
    assert counts["images"] == 2 and 0 <= counts["relation_accuracy"] <= 1
    assert counts["object_recall"] >= 0.5  # the shipped model's latents, decoded: its objects
