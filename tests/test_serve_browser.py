"""End to end in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): build a
graph in the editor, see it drawn, generate, see the image; errors land next to their part.
A screenshot is saved to $SG2IMAGE_ARTIFACTS (default tests/artifacts/)."""

import json
import os
import shutil
from pathlib import Path

import pytest
from serve_fixtures import LoopbackServer, tiny_pipeline

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

pytestmark = pytest.mark.usefixtures("one_thread")

ARTIFACTS = Path(os.environ.get("SG2IMAGE_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real ASGI server (uvicorn) on a free loopback port."""
    pipe = tiny_pipeline(tmp_path_factory.mktemp("browser"))
    app = create_app(pipe, ServeSettings(default_steps=2, max_steps=10), model_name="tiny")
    with LoopbackServer(app) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def page(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = browser.new_context(
            viewport={"width": 1280, "height": 860}, accept_downloads=True
        )
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        yield page
        assert not errors, errors
        browser.close()


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
    page.click("#generate")
    page.wait_for_selector("#results img.generated")
    images = page.locator("#results img.generated")
    assert images.count() == 2
    page.wait_for_function(
        "[...document.querySelectorAll('#results img.generated')].every(i => i.naturalWidth > 0)"
    )
    assert images.first.evaluate("i => i.naturalWidth") == 32
    captions = page.locator("#results figcaption").all_inner_texts()
    assert captions[0].startswith("seed 11") and captions[1].startswith("seed 12")

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
    assert not page.locator("#results figcaption").first.inner_text().startswith("seed 11")


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
