"""End to end in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): build a
graph in the editor, see it drawn, generate, see the image; errors land next to their part; on
a layout model, see the layout over the image, drag and resize its boxes, generate again.
Screenshots are saved to $SG2IMAGE_ARTIFACTS (default tests/artifacts/)."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from serve_fixtures import LoopbackServer, tiny_layout_pipeline, tiny_pipeline

from sg2image.serve import ServeSettings, create_app
from sg2image.serve.headless import CHROMIUM as DEBIAN_CHROMIUM
from sg2image.serve.headless import CHROMIUM_FLAGS

CHROMIUM = os.environ.get("SG2IMAGE_CHROMIUM") or shutil.which("chromium") or DEBIAN_CHROMIUM
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
        allow_module_level=True,
    )
# the dev extra has it: missing, it fails rather than skips
from playwright.sync_api import sync_playwright  # noqa: E402

# a browser and two servers: the slowest start-up of the suite
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

ARTIFACTS = Path(os.environ.get("SG2IMAGE_ARTIFACTS", Path(__file__).parent / "artifacts"))


def serve(pipe, name):
    """The real ASGI server (uvicorn) on a free loopback port."""
    app = create_app(pipe, ServeSettings(default_steps=2, max_steps=10), model_name=name)
    return LoopbackServer(app)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(tiny_pipeline(tmp_path_factory.mktemp("browser")), "tiny") as srv:
        yield srv.url


@pytest.fixture(scope="module")
def layout_server(tmp_path_factory):
    with serve(tiny_layout_pipeline(tmp_path_factory.mktemp("browser-layout")), "layout") as srv:
        yield srv.url


@pytest.fixture(scope="module")
def depth_server(tmp_path_factory):
    pipe = tiny_layout_pipeline(tmp_path_factory.mktemp("browser-depth"), world="depth")
    with serve(pipe, "depth") as srv:
        yield srv.url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def open_editor(browser, url):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    # a loaded machine (CI beside other jobs) can take longer than Playwright's 30 s default to
    # generate; the waits are for events, so a longer bound costs nothing when all is well
    page.set_default_timeout(90_000)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    yield page
    assert not errors, errors
    context.close()


@pytest.fixture(scope="module")
def page(browser, server):
    yield from open_editor(browser, server)


@pytest.fixture(scope="module")
def layout_page(browser, layout_server):
    yield from open_editor(browser, layout_server)


@pytest.fixture(scope="module")
def depth_page(browser, depth_server):
    yield from open_editor(browser, depth_server)


def add_object(page, label):
    page.select_option("#object-pick", label)
    page.click("#add-object")


def test_build_a_graph_generate_and_see_the_image(page):
    add_object(page, "red circle")
    add_object(page, "blue square")
    add_object(page, "green triangle")
    page.select_option("#rel-subject", "0")
    page.select_option("#rel-predicate", "left of")
    page.select_option("#rel-object", "1")
    page.click("#add-relationship")
    page.select_option("#rel-subject", "2")
    page.select_option("#rel-predicate", "above")
    page.select_option("#rel-object", "0")
    page.click("#add-relationship")
    assert page.locator("#relationships li").count() == 2

    drawing = page.wait_for_selector("#graph-drawing:not([hidden])")
    page.wait_for_function("document.getElementById('graph-drawing').naturalWidth === 320")
    assert drawing.get_attribute("src").startswith("blob:")

    page.fill("#seed", "11")
    page.fill("#num-images", "2")
    with page.expect_request("**/api/generate") as sent:
        page.click("#generate")
    assert "layout" not in sent.value.post_data_json  # a layout-free model: nothing to choose
    page.wait_for_selector("#results img.generated")
    images = page.locator("#results img.generated")
    assert images.count() == 2
    page.wait_for_function(
        "[...document.querySelectorAll('#results img.generated')].every(i => i.naturalWidth > 0)"
    )
    assert images.first.evaluate("i => i.naturalWidth") == 32
    captions = page.locator("#results figcaption").all_inner_texts()
    assert captions[0].startswith("seed 11") and captions[1].startswith("seed 12")
    assert not page.is_visible("#layout-field") and not page.is_visible("#layout-toggle")
    assert page.locator("#results .box, #results .again").count() == 0

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "editor_e2e.png"), full_page=True)
    assert (ARTIFACTS / "editor_e2e.png").stat().st_size > 10_000

    with page.expect_download() as info:  # the graph JSON, as built
        page.click("#download-graph")
    graph = json.loads(Path(info.value.path()).read_text())
    assert graph == {
        "objects": ["red circle", "blue square", "green triangle"],
        "relationships": [[0, "left of", 1], [2, "above", 0]],
    }

    first = images.first.get_attribute("src")  # another seed, another image
    page.click("#regenerate")
    page.wait_for_function(
        f"document.querySelector('#results img.generated').src !== {json.dumps(first)}"
    )
    caption = page.locator("#results figcaption").first.inner_text()
    # the seed as a number: a random seed such as 1187 also starts with "seed 11"
    assert re.match(r"seed (\d+)", caption).group(1) != "11"


def test_errors_show_next_to_their_part_and_examples_load(page):
    page.click("#paste-box summary")
    bad = {
        "objects": ["red circel", "blue square"],
        "relationships": [[0, "left of", 1], [1, "above", 1]],
    }
    page.fill("#paste", json.dumps(bad))
    page.click("#load-json")
    page.wait_for_selector("#object-0.has-error")
    assert "did you mean 'red circle'" in page.inner_text("#object-0 .error")
    page.wait_for_selector("#relationship-1.has-error")
    assert "related to itself" in page.inner_text("#relationship-1 .error")
    assert page.inner_text("#relationship-0 .error") == ""
    # generating anyway: the server's 422 lands on the same rows
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.includes('problems')")
    assert "unknown object" in page.inner_text("#object-0 .error")

    page.fill("#paste", "{not json")
    page.click("#load-json")
    assert "not JSON" in page.inner_text("#paste-error")

    page.click("#load-example")
    page.wait_for_function("document.querySelectorAll('#objects li').length > 0")
    page.wait_for_function("!document.querySelector('#objects .has-error')")
    page.fill("#steps", "99")  # over this server's limit: the 422 shows by the field
    page.click("#generate")
    page.wait_for_function("document.querySelector('[data-error-for=steps]').textContent !== ''")
    assert "less than or equal to 10" in page.inner_text("[data-error-for=steps]")


def box_in_pixels(page, k):
    """Box k of the first image as [x0, y0, x1, y1] in [0, 1], measured on the page."""
    layer = page.locator("#results .layout").first.bounding_box()
    r = page.locator("#results .box").nth(k).bounding_box()
    x, y, w, h = r["x"] - layer["x"], r["y"] - layer["y"], r["width"], r["height"]
    return [x / layer["width"], y / layer["height"], (x + w) / layer["width"],
            (y + h) / layer["height"]]  # fmt: skip


def drag(page, locator, dx, dy):
    at = locator.bounding_box()
    x, y = at["x"] + at["width"] / 2, at["y"] + at["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2)
    page.mouse.move(x + dx, y + dy)
    page.mouse.up()


def toward_middle(lo, hi, px):
    return px if (lo + hi) / 2 < 0.5 else -px


def close(a, b, tol=2e-3):
    return all(abs(u - v) <= tol for u, v in zip(a, b, strict=True))


def test_layout_overlay_drag_resize_and_generate_again(layout_page):
    page = layout_page
    assert page.is_visible("#layout-field") and page.is_visible("#layout-toggle")
    add_object(page, "red circle")
    add_object(page, "blue square")
    page.click("#add-relationship")  # red circle left of blue square
    # layout 'given' without boxes: the server's 422, shown by the layout choice
    page.select_option("#layout", "given")
    page.click("#generate")
    page.wait_for_function("document.querySelector('[data-error-for=boxes]').textContent")
    assert "needs a box for every object" in page.inner_text("[data-error-for=boxes]")

    page.select_option("#layout", "predicted")
    page.fill("#seed", "21")
    with page.expect_response("**/api/generate") as answer:
        page.click("#generate")
    data = answer.value.json()
    assert data["layout"] == "predicted"
    boxes = data["images"][0]["boxes"]
    page.wait_for_selector("#results img.generated")
    assert page.locator("#results .box").count() == 2
    assert not page.is_visible("#results .box")  # until the toggle
    page.check("#show-layout")
    assert page.is_visible("#results .box")
    layer = page.locator("#results .layout").first.bounding_box()
    w, h = layer["width"], layer["height"]
    assert w > 100 and abs(w - h) < 1
    for k, box in enumerate(boxes):  # each box drawn where the server put it, labelled
        assert close(box_in_pixels(page, k), box, 1.5 / w)
    assert page.locator("#results .box .tag").all_inner_texts() == ["0 red circle", "1 blue square"]
    # a model without depth order: no depth predicates, no "bring to front"
    assert page.locator("#rel-predicate optgroup, #results .raise").count() == 0
    assert not page.is_visible("#depth-hint")

    # move box 0 by (dx, dy) px, toward the middle; resize box 1 by its bottom-right corner
    x0, y0, x1, y1 = boxes[0]
    dx, dy = toward_middle(x0, x1, 14), toward_middle(y0, y1, 9)
    drag(page, page.locator("#results .box").nth(0), dx, dy)
    nx = min(max(x0 + dx / w, 0), 1 - (x1 - x0))
    ny = min(max(y0 + dy / h, 0), 1 - (y1 - y0))
    moved = [nx, ny, nx + x1 - x0, ny + y1 - y0]
    assert close(box_in_pixels(page, 0), moved, 1.5 / w)
    (a0, b0, a1, b1) = boxes[1]
    ex, ey = -8 if a1 > 0.9 else 8, -6 if b1 > 0.9 else 6
    drag(page, page.locator("#results .box").nth(1).locator(".handle[data-corner=se]"), ex, ey)
    resized = [a0, b0, a1 + ex / w, b1 + ey / h]
    assert close(box_in_pixels(page, 1), resized, 1.5 / w)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "editor_layout.png"), full_page=True)

    with page.expect_download() as info:  # the moved boxes are now the graph's
        page.click("#download-graph")
    graph = json.loads(Path(info.value.path()).read_text())
    assert graph["objects"] == ["red circle", "blue square"]
    assert close(graph["boxes"][0], moved) and close(graph["boxes"][1], resized)

    first = page.locator("#results img.generated").first.get_attribute("src")
    with (
        page.expect_request("**/api/generate") as sent,
        page.expect_response("**/api/generate") as again,
    ):
        page.locator("#results .again").first.click()
    body = sent.value.post_data_json
    assert body["layout"] == "given" and body["seed"] == 21 and body["num_images"] == 1
    assert close(body["graphs"][0]["boxes"][0], moved)
    assert close(body["graphs"][0]["boxes"][1], resized)
    assert again.value.json()["images"][0]["boxes"] == body["graphs"][0]["boxes"]
    page.wait_for_function(
        f"document.querySelector('#results img.generated').src !== {json.dumps(first)}"
    )
    assert page.input_value("#layout") == "given"
    assert close(box_in_pixels(page, 0), moved, 1.5 / w)  # the new image, its given layout
    assert "seed 21" in page.inner_text("#results figcaption")


# The editor's depth logic, run in the page: [relationships, boxes, i] -> what bringing box i
# to the front makes of the relationships. Boxes: 0 overlaps 1, 1 overlaps 2, 3 overlaps none.
FRONT_BOXES = [[0, 0, 0.5, 0.5], [0.3, 0.3, 0.8, 0.8], [0.6, 0.6, 0.9, 0.9], [0.9, 0, 1, 0.1]]
FRONT_CASES = [
    ([[1, "in front of", 0]], 0, [[0, "in front of", 1]]),  # turned round
    ([[0, "behind", 1], [0, "left of", 1]], 0, [[0, "in front of", 1], [0, "left of", 1]]),
    ([[0, "above", 1]], 0, [[0, "above", 1], [0, "in front of", 1]]),  # none: added
    ([[0, "in front of", 1]], 0, [[0, "in front of", 1]]),  # already: kept
    # 2 is in front of 0 without overlapping it, but 0 is now in front of 1, 1 of 2: the triple
    # that would close the cycle goes
    (
        [[1, "in front of", 2], [2, "in front of", 0]],
        0,
        [[1, "in front of", 2], [0, "in front of", 1]],
    ),
    (
        [[2, "in front of", 1], [1, "behind", 2]],
        1,  # the same fact twice: written once
        [[1, "in front of", 2], [1, "in front of", 0]],
    ),
    ([[0, "in front of", 1]], 3, [[0, "in front of", 1]]),  # overlaps nothing
]


def test_depth_order_in_the_overlay_and_bring_to_front(depth_page):
    page = depth_page
    for rels, i, want in FRONT_CASES:
        got = page.evaluate(
            "([r, b, i]) => broughtToFront(r, b, i, ['in front of', 'behind']).relationships",
            [rels, FRONT_BOXES, i],
        )
        assert got == want, (rels, i)
    # a model with only 'behind' gets its front written that way; ranks as graph.depth_ranks
    only_behind = "b => broughtToFront([], b, 0, ['behind']).relationships"
    assert page.evaluate(only_behind, FRONT_BOXES) == [[1, "behind", 0]]
    ranks = [[0, "in front of", 1], [1, "in front of", 2], [3, "behind", 2], [0, "above", 3]]
    assert page.evaluate("r => depthRanks(4, r)", ranks) == [3, 2, 1, 0]

    groups = page.locator("#rel-predicate optgroup")
    assert groups.nth(1).get_attribute("label") == "depth order"
    assert groups.nth(1).locator("option").all_inner_texts() == ["in front of", "behind"]

    # two boxes apart; the red circle behind the blue square
    page.click("#paste-box summary")
    boxes = [[0.05, 0.05, 0.35, 0.35], [0.55, 0.45, 0.95, 0.85]]
    page.fill("#paste", json.dumps({"objects": ["red circle", "blue square"], "boxes": boxes}))
    page.click("#load-json")
    page.select_option("#rel-predicate", "behind")
    page.click("#add-relationship")
    page.select_option("#layout", "given")
    page.fill("#seed", "5")
    with page.expect_response("**/api/generate") as answer:
        page.click("#generate")
    assert answer.value.ok, answer.value.text()
    page.wait_for_selector("#results img.generated")
    page.check("#show-layout")
    assert page.is_visible("#depth-hint")
    box = page.locator("#results .box")
    assert box.nth(0).get_attribute("class") == box.nth(1).get_attribute("class") == "box"

    # drag the red circle over the blue square's top-left; its own top-right corner stays clear
    layer = page.locator("#results .layout").first.bounding_box()
    w, h = layer["width"], layer["height"]
    drag(page, box.nth(0), 0.35 * w, 0.25 * h)
    moved = box_in_pixels(page, 0)
    assert close(moved, [0.4, 0.3, 0.7, 0.6], 1.5 / w)
    # the overlap's centre, on the page: which box is drawn there
    x = layer["x"] + (0.55 + moved[2]) / 2 * w
    y = layer["y"] + (0.45 + moved[3]) / 2 * h
    on_top = f"document.elementFromPoint({x}, {y}).closest('.box').dataset.index"

    def order():
        return [box.nth(k).evaluate("e => [e.className, Number(e.style.zIndex)]") for k in (0, 1)]

    assert order() == [["box behind", 1], ["box front", 2]]
    assert page.evaluate(on_top) == "1"
    assert box.nth(1).locator(".front-tag").is_visible()

    page.wait_for_function("document.getElementById('graph-drawing').naturalWidth === 320")
    drawing = page.get_attribute("#graph-drawing", "src")
    box.nth(0).locator(".raise").click()  # the back one to the front
    assert page.locator("#relationships li .triple").all_inner_texts() == [
        "0 red circle in front of 1 blue square"
    ]
    assert order() == [["box front", 2], ["box behind", 1]]
    assert page.evaluate(on_top) == "0"
    assert "1 relation(s) turned round" in page.inner_text("#status")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "editor_depth.png"), full_page=True)

    with page.expect_download() as info:
        page.click("#download-graph")
    graph = json.loads(Path(info.value.path()).read_text())
    assert graph["relationships"] == [[0, "in front of", 1]]
    assert close(graph["boxes"][0], moved) and graph["boxes"][1] == boxes[1]
    # the graph drawing follows: a new picture of the edited graph
    page.wait_for_function(
        f"document.getElementById('graph-drawing').src !== {json.dumps(drawing)}"
    )

    first = page.locator("#results img.generated").first.get_attribute("src")
    with (
        page.expect_request("**/api/generate") as sent,
        page.expect_response("**/api/generate") as again,
    ):
        page.locator("#results .again").first.click()
    assert sent.value.post_data_json["graphs"][0]["relationships"] == [[0, "in front of", 1]]
    assert again.value.ok, again.value.text()
    page.wait_for_function(
        f"document.querySelector('#results img.generated').src !== {json.dumps(first)}"
    )
    assert order() == [["box front", 2], ["box behind", 1]]  # the new image, the same order


@pytest.fixture(scope="module")
def finish_page(browser, tmp_path_factory):
    pipe = tiny_layout_pipeline(tmp_path_factory.mktemp("browser-finish"))
    pipe.register_to_config(finish_timestep=39)  # as `train` saves it in a layout model
    with serve(pipe, "finish") as srv:
        yield from open_editor(browser, srv.url)


def test_a_finish_default_leaves_steps_and_guidance_empty(finish_page):
    """On a model whose default is the finish sampler the editor sends no steps or guidance
    (so the server samples its default) and says so in the empty fields."""
    page = finish_page
    assert page.input_value("#steps") == "" and page.input_value("#guidance") == ""
    assert page.get_attribute("#steps", "placeholder") == "2 (finish)"
    assert page.locator("#sampler option").first.inner_text() == "model default (finish)"
    add_object(page, "red circle")
    with page.expect_request("**/api/generate") as sent:
        page.click("#generate")
    body = sent.value.post_data_json
    assert "steps" not in body and "guidance" not in body and "sampler" not in body
    page.wait_for_selector("#results img.generated")
    assert "2 steps, guidance 2, finish" in page.inner_text("#result-info")
