"""The evaluation suite on tiny random extractors and stand-ins (nothing downloaded): FID /
KID / IS, DS or feature diversity, the detector interface, and one-line errors."""

import hashlib
import importlib.machinery
import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch import nn
from typer.testing import CliRunner

from sg2image.cli import app
from sg2image.data.shapes import make_split, render
from sg2image.eval import oracle
from sg2image.eval.detector import (
    Detection,
    Detector,
    ShapesDetector,
    load_detector,
    score_detections,
    summarise,
)
from sg2image.eval.errors import EvalSetupError
from sg2image.eval.extractors import CustomExtractor
from sg2image.eval.suite import evaluate_folders, format_table
from sg2image.graph import save_graphs

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


class TinyNet(nn.Module):
    """uint8 (N, 3, H, W) -> features (N, 64), and logits (N, classes) when classes > 0."""

    def __init__(self, classes: int = 0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.fc = nn.Linear(8 * 4 * 4, 64)
        self.head = nn.Linear(64, classes) if classes else None

    def forward(self, x):
        h = F.adaptive_avg_pool2d(torch.relu(self.conv(x.float() / 127.5 - 1)), 4).flatten(1)
        f = self.fc(h)
        return (f, self.head(f)) if self.head is not None else f


def degrade(image, rng):
    blurred = np.stack([ndimage.gaussian_filter(image[..., c] * 1.0, 1.0) for c in range(3)], -1)
    return np.clip(blurred + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)


def write_sample_folders(root):
    """6 graphs; reference = their renders; samples 0 = the renders, 1 = degraded renders."""
    graphs = make_split("test", n=6)
    gen, ref = root / "gen", root / "ref"
    gen.mkdir()
    ref.mkdir()
    save_graphs(graphs, gen / "graphs.json")
    rng = np.random.default_rng(0)
    for i, g in enumerate(graphs):
        image = render(g)
        Image.fromarray(image).save(ref / f"{i:06d}.png")
        Image.fromarray(image).save(gen / f"{i:06d}_0.png")
        Image.fromarray(degrade(image, rng)).save(gen / f"{i:06d}_1.png")
    return graphs, gen, ref


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_sample_folders(tmp_path_factory.mktemp("eval"))


@pytest.fixture(autouse=True)
def no_optional_packages(monkeypatch):
    """As on a default install, whatever this machine has: no lpips, no torch-fidelity."""
    monkeypatch.setitem(sys.modules, "lpips", None)
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------------ FID, KID, IS, diversity


def test_custom_extractor_records_everything_and_no_is_without_a_classifier(folders):
    graphs, gen, ref = folders
    fx = CustomExtractor(TinyNet(), "tiny random 64-d")
    r = evaluate_folders(gen, ref, extractor=fx)
    assert (r["num_generated"], r["num_reference"], r["num_graphs"]) == (12, 6, 6)
    assert r["samples_per_graph"] == 2 and r["resolution"] == 64
    assert r["feature_extractor"]["name"] == "tiny random 64-d"
    assert r["fid"] > 0 and np.isfinite(r["kid"]) and r["kid_subset_size"] == 6
    assert r["is"] is None and "no class logits" in r["is_unavailable"]
    assert r["ds"] is None and "sg2image[lpips]" in r["ds_unavailable"]
    assert r["feature_diversity"] > 0 and r["diversity_pairs"] == 6 and "DS" not in r
    assert r["detector"] is None
    table = format_table(r)
    assert "tiny random 64-d" in table and "12 (6 graphs x 2 samples)" in table
    assert "IS" in table and "n/a" in table
    json.dumps(r)  # all of it is JSON


def test_fid_zero_on_the_same_images_and_is_from_a_classifier(folders, tmp_path):
    _, _, ref = folders
    same = tmp_path / "same"
    same.mkdir()
    for p in sorted(ref.iterdir()):
        (same / f"{p.stem}_0.png").write_bytes(p.read_bytes())
    fx = CustomExtractor(TinyNet(classes=10), "tiny random classifier")
    r = evaluate_folders(same, ref, extractor=fx, is_splits=3)
    assert r["fid"] == pytest.approx(0.0, abs=1e-3)
    assert 1.0 <= r["is"] <= 10.0 and r["is_splits"] == 3
    assert r["is_classifier"] == "tiny random classifier"
    again = evaluate_folders(same, ref, extractor=fx, is_splits=3)
    assert (again["is"], again["kid"]) == (r["is"], r["kid"])  # seeded shuffles
    assert r["ds"] is None and r["diversity_pairs"] == 0  # one sample per graph


def test_resolution_resizes_both_sides(folders):
    _, gen, ref = folders
    r = evaluate_folders(gen, ref, extractor=CustomExtractor(TinyNet(), "t"), resolution=32)
    assert r["resolution"] == 32 and "32 x 32" in r["resize"]


# ------------------------------------------------------------------------------- detector


def test_shapes_detector_through_the_interface_agrees_with_the_oracle():
    graphs = make_split("test", n=40)
    rng = np.random.default_rng(1)
    detector = ShapesDetector()
    assert isinstance(detector, Detector)
    for images in ([render(g) for g in graphs], [degrade(render(g), rng) for g in graphs]):
        pairs = zip(graphs, images, strict=True)
        ours = summarise([score_detections(g, detector.detect(im), (64, 64)) for g, im in pairs])
        ref = oracle.score_images(images, graphs).to_json()
        assert ours["oor"] == ref["object_recall"]
        assert ours["relation_accuracy"] == ref["relation_accuracy"]
        assert ours["per_predicate"] == ref["per_predicate"]
        assert ours["placement"] is None and ours["placement_judged"] is None  # not measured
        placed = [detector.placement(im, g) for g, im in zip(graphs, images, strict=True)]
        assert placed == [
            (s.placement_correct, s.placement_judged)
            for s in map(oracle.score_image, images, graphs)
        ]
        assert sum(j for _, j in placed) == ref["placement_judged"] == 79
    truth = [score_detections(g, detector.detect(render(g)), (64, 64)) for g in graphs]
    assert summarise(truth)["oor"] == 1.0
    # placement counts, where given, are summed over images: correct / judged
    truth[0].placement, truth[1].placement = (1, 2), (0, 1)
    s = summarise(truth)
    assert s["placement"] == pytest.approx(1 / 3) and s["placement_judged"] == 3


def test_containment_predicates_and_unjudged_ones():
    from sg2image.graph import SceneGraph

    g = SceneGraph(
        objects=["box", "cat", "dog"],
        relationships=[(0, "surrounding", 1), (1, "inside", 0), (2, "left of", 1), (2, "on", 0)],
    )
    found = [
        Detection("box", (10, 10, 50, 50)),
        Detection("cat", (20, 20, 30, 30)),
        Detection("dog", (0, 0, 5, 5)),
    ]
    s = summarise([score_detections(g, found, (64, 64))])
    assert s["oor"] == 1.0 and s["relation_accuracy"] == 1.0
    assert s["num_relations_judged"] == 3 and s["relations_not_judged"] == {"on": 1}
    s = summarise([score_detections(g, found[:2], (64, 64), labels={"box", "cat"})])
    assert s["oor"] == 1.0 and s["objects_not_detectable"] == 1
    assert s["relations_not_judged"] == {"left of": 1, "on": 1}


USER_DETECTORS = '''
from sg2image.eval.detector import Detection, ShapesDetector


class Boxless:
    """Finds circles only and says nothing about where they are."""

    name = "circles, no boxes"
    labels = None

    def detect(self, image):
        found = ShapesDetector().detect(image)
        return [Detection(d.label, None, 0.9) for d in found if d.label.endswith("circle")]


def boxless():
    return Boxless()


def shapes():
    return ShapesDetector()


def not_a_detector():
    return 42
'''


def test_user_detector_by_import_path(folders, tmp_path, monkeypatch):
    graphs, gen, ref = folders
    (tmp_path / "user_detectors.py").write_text(USER_DETECTORS)
    monkeypatch.syspath_prepend(str(tmp_path))
    fx = CustomExtractor(TinyNet(), "t")
    oracle_r = evaluate_folders(gen, ref, None, graphs, extractor=fx, detector="shapes")
    user_r = evaluate_folders(
        gen, ref, None, graphs, extractor=fx, detector="user_detectors:shapes"
    )
    assert user_r["oor"] == oracle_r["oor"] == 1.0
    assert user_r["relation_accuracy"] == oracle_r["relation_accuracy"]
    assert user_r["detector"] == {"name": "Shapes oracle", "spec": "user_detectors:shapes"}
    # placement: 11 of the 6 graphs' 21 triples judged, in each of the 2 samples
    assert oracle_r["placement"] == user_r["placement"] == 1.0
    assert oracle_r["placement_judged"] == user_r["placement_judged"] == 22
    assert "placement                1.0000  22 triples judged" in format_table(oracle_r)
    boxless = evaluate_folders(
        gen, ref, None, graphs, extractor=fx, detector="user_detectors:boxless"
    )
    circles = sum(o.endswith("circle") for g in graphs for o in g.objects) * 2
    assert boxless["oor"] == circles / boxless["num_objects"]
    assert boxless["relation_accuracy"] is None  # no positions, no relations
    assert boxless["placement"] is None and boxless["placement_judged"] is None
    assert "placement" not in format_table(boxless)
    with pytest.raises(EvalSetupError, match="no detect"):
        load_detector("user_detectors:not_a_detector")
    with pytest.raises(EvalSetupError, match="no callable 'nope'"):
        load_detector("user_detectors:nope")


# ----------------------------------------------------------------------- CLI and its errors


def test_cli_errors_are_one_line_with_exit_code_2(folders, tmp_path):
    graphs, gen, ref = folders
    base = ("eval", "--generated", gen, "--reference", ref)
    one_line_error(run(*base), "no feature extractor", "--inception", "--clip")
    one_line_error(run(*base, "--inception", tmp_path / "w.pth"), "sg2image[fidelity]")
    clip = tmp_path / "clip"
    one_line_error(run(*base, "--clip", clip, "--inception", "x"), "not both")
    one_line_error(run(*base, "--detector", "nonsense"), "MODULE:FACTORY")
    one_line_error(run(*base, "--detector", "no_such_module_x:make"), "cannot import")
    w = tmp_path / "alex.pth"
    one_line_error(run(*base, "--clip", clip, "--lpips-weights", w), "sg2image[lpips]")


def fake_torch_fidelity():
    """torch_fidelity.feature_extractor_inceptionv3 with a tiny network of the same contract:
    __init__(name, features_list, feature_extractor_weights_path), forward -> a tuple."""

    class FeatureExtractorInceptionV3(nn.Module):
        def __init__(self, name, features_list, feature_extractor_weights_path=None):
            super().__init__()
            assert features_list == ["2048", "logits_unbiased"]
            self.net = TinyNet(classes=10)
            if feature_extractor_weights_path is None:
                raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
            self.load_state_dict(torch.load(feature_extractor_weights_path, weights_only=True))

        def forward(self, x):
            return self.net(x)

    package = types.ModuleType("torch_fidelity")
    module = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    module.FeatureExtractorInceptionV3 = FeatureExtractorInceptionV3
    return package, module


class NotWeights:
    pass


def test_cli_inception_weights_file(folders, tmp_path, monkeypatch):
    graphs, gen, ref = folders
    package, module = fake_torch_fidelity()
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", module)
    base = ("eval", "--generated", gen, "--reference", ref)
    missing = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    one_line_error(run(*base, "--inception", missing), "no such file")
    one_line_error(run(*base, "--inception", "download"), "could not be downloaded", "--inception")
    pickle = tmp_path / "pickle.pth"
    torch.save({"x": NotWeights()}, pickle)  # weights_only=True must refuse to build it
    one_line_error(run(*base, "--inception", pickle), "not a plain file of tensors")
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    one_line_error(run(*base, "--inception", wrong), "not the InceptionV3 FID weights")

    weights = tmp_path / "inception.pth"
    torch.save({"net." + k: v for k, v in TinyNet(classes=10).state_dict().items()}, weights)
    out = tmp_path / "eval.json"
    result = run(*base, "--inception", weights, "--detector", "shapes", "--report", out)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert r["feature_extractor"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert "NOT the standard weights" in r["feature_extractor"]["name"]
    assert r["feature_extractor"]["standard_weights"] is False
    assert r["is"] >= 1.0 and r["oor"] == 1.0 and r["detector"]["name"] == "Shapes oracle"
    for line in ("FID", "KID", "IS", "DS (LPIPS)", "OOR", "relation accuracy", "64 px"):
        assert line in result.output


def fake_lpips():
    """lpips.LPIPS with lpips' layout: a backbone net.sliceK.N (N = the index in
    torchvision's AlexNet.features) and a distance on its features."""

    class LPIPS(nn.Module):
        def __init__(self, net="alex", version="0.1", pnet_rand=False, verbose=True):
            super().__init__()
            if not pnet_rand:
                raise OSError("no network")
            self.net = nn.Module()
            self.net.slice1 = nn.Sequential()
            self.net.slice1.add_module("0", nn.Conv2d(3, 4, 3))
            self.net.slice1.add_module("1", nn.ReLU())
            self.net.slice2 = nn.Sequential()
            self.net.slice2.add_module("2", nn.Conv2d(4, 4, 3))

        def forward(self, a, b):
            fa, fb = self.net.slice2(self.net.slice1(a)), self.net.slice2(self.net.slice1(b))
            return (fa - fb).pow(2).mean((1, 2, 3)).view(-1, 1, 1, 1)

    module = types.ModuleType("lpips")
    module.__spec__ = importlib.machinery.ModuleSpec("lpips", None)
    module.LPIPS = LPIPS
    return module


def test_cli_lpips_weights(folders, tmp_path, monkeypatch):
    graphs, gen, ref = folders
    monkeypatch.setitem(sys.modules, "lpips", fake_lpips())
    torch.manual_seed(0)
    alexnet = {  # torchvision's key layout (features.N.*, classifier.*)
        "features.0.weight": torch.randn(4, 3, 3, 3),
        "features.0.bias": torch.randn(4),
        "features.2.weight": torch.randn(4, 4, 3, 3),
        "features.2.bias": torch.randn(4),
        "classifier.1.weight": torch.randn(2, 2),
    }
    weights = tmp_path / "alexnet-owt.pth"
    torch.save(alexnet, weights)
    package, module = fake_torch_fidelity()
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", module)
    inception = tmp_path / "inception.pth"
    torch.save({"net." + k: v for k, v in TinyNet(classes=10).state_dict().items()}, inception)
    base = ("eval", "--generated", gen, "--reference", ref, "--inception", inception)
    out = tmp_path / "eval.json"
    result = run(*base, "--lpips-weights", weights, "--report", out)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert r["ds"] > 0 and r["diversity_pairs"] == 6 and "feature_diversity" in r
    assert r["ds_model"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    result = run(*base, "--no-lpips", "--report", out)
    assert json.loads(out.read_text())["ds_unavailable"] == "turned off (--no-lpips)"
    one_line_error(run(*base), "could not be loaded", "--lpips-weights")  # installed, offline
    del alexnet["features.2.weight"]
    torch.save(alexnet, weights)
    one_line_error(run(*base, "--lpips-weights", weights), "no 'features.2.weight'")
