"""The latent-space explorer (`kvae serve`'s page at /) in a real headless Chromium, and the API it stands on.

The browser is Debian's chromium (`make browser`), driven by Playwright's Python library; the server is
the real one on 127.0.0.1. One browser for the module and one page per model, reused by the tests in
order. The page dispatches `explorer:drawn` events ({view, ms}) when it has drawn; an init script
collects them in window.__drawn, so that a test can wait for the drawing its action caused.
"""

import base64
import contextlib
import io
import json
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from kvae_contract.artifacts import KL_PER_DIM, NUM_TEST_IMAGES, TEST_IMAGES
from kvae_serving import static

pytest.register_assert_rewrite("tests.serving_fixtures")
from tests.serving_fixtures import MAX_BATCH_SIZE, MAX_BODY_BYTES, error_of, request  # noqa: E402

pytest_plugins = ["tests.serving_fixtures"]

CHROMIUM = "/usr/bin/chromium"  # Debian's package; `playwright install` is never run
COLLECT = "window.__drawn = []; document.addEventListener('explorer:drawn', (e) => window.__drawn.push(e.detail));"
# The RGBA bytes of every canvas matching a selector, as one base64 string (an array of numbers crosses from the
# page element by element, seconds for a 420 x 420 canvas).
PIXELS = """(selector) => btoa(Array.from(document.querySelectorAll(selector)).map((c) => Array.from(
    c.getContext("2d").getImageData(0, 0, c.width, c.height).data, (v) => String.fromCharCode(v)).join("")).join(""))"""
WAIT_MS = 30_000  # generous: two busy cores


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium) to install it.",
                    pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: run `make install` (the `test` extra installs playwright).", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@contextlib.contextmanager
def serving(artifacts):
    """The real server on 127.0.0.1 around these artifacts, with the serving tests' limits."""
    from kvae_serving.runtime import Runtime
    from kvae_serving.server import make_server

    server = make_server(Runtime(artifacts), "127.0.0.1", 0, max_batch_size=MAX_BATCH_SIZE,
                         max_body_bytes=MAX_BODY_BYTES)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class Page:
    """A browser page on the explorer, with what its console said."""

    def __init__(self, browser, server, views=("samples", "slider", "interpolation")):
        self.problems = []  # console errors, uncaught exceptions, failed requests
        self.page = browser.new_page(viewport={"width": 1200, "height": 1400})
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.add_init_script(COLLECT)
        self.page.goto(server.url + "/")
        for view in views:  # the first drawing of each
            self.wait(view, 0)

    def count(self, view):
        return self.page.evaluate("(v) => window.__drawn.filter((e) => e.view === v).length", view)

    def wait(self, view, count):
        """The detail of `view`'s latest drawing, once it has drawn more than `count` times."""
        self.page.wait_for_function("([v, n]) => window.__drawn.filter((e) => e.view === v).length > n",
                                    arg=[view, count], timeout=WAIT_MS)
        return self.page.evaluate("(v) => window.__drawn.filter((e) => e.view === v).at(-1)", view)

    def pixels(self, selector):
        return np.frombuffer(base64.b64decode(self.page.evaluate(PIXELS, selector)), np.uint8).astype(np.int16)


@pytest.fixture(scope="module")
def page(browser, live_server):
    explorer = Page(browser, live_server)
    yield explorer
    explorer.page.close()


def png_bytes(image):
    """float (28, 28, 1) in [0, 1] -> PNG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()


# The page, in a browser


def test_page_loads_without_console_errors(page, serving_runtime):
    assert page.problems == []
    p = page.page
    assert "8 latent dimensions" in p.inner_text("#model-summary")
    assert p.inner_text("#message") == ""
    assert p.locator("#samples canvas").count() == 16
    assert p.locator("#test-images button").count() == NUM_TEST_IMAGES
    assert p.locator("#sliders input[type=range]").count() == 8 == serving_runtime.latent_dim
    assert not p.is_visible("#class-picker") and not p.is_visible("#manifold-section")  # unconditional, latent 8
    # tiny_run was not evaluated: no kl_per_dim in its manifest, so the page ranks by the test images' codes.
    assert "ranked by the spread" in p.inner_text("#ranking-note") and "24 shipped test images" in p.inner_text(
        "#ranking-note")
    assert p.evaluate("document.querySelectorAll('script:not([src])').length") == 0  # no inline script
    for control in p.locator("input, select").all():  # every control has a label
        assert control.evaluate("(e) => e.labels.length > 0 || !!e.closest('label')"), control.evaluate("e => e.id")


def test_new_seed_changes_the_samples(page):
    p = page.page
    before, seed = page.pixels("#samples canvas"), p.input_value("#seed")
    count = page.count("samples")
    p.click("#new-seed")
    detail = page.wait("samples", count)
    assert str(detail["seed"]) == p.input_value("#seed") != seed
    assert np.abs(page.pixels("#samples canvas") - before).sum() > 1000


def test_slider_move_changes_the_image(page):
    p = page.page
    slider = p.locator("#sliders input[type=range]").first
    before, count = page.pixels("#slider-image"), page.count("slider")
    slider.fill(str(float(slider.get_attribute("max")) - 0.05))  # to its end: the top dimension, 3 units away
    page.wait("slider", count)
    assert np.abs(page.pixels("#slider-image") - before).sum() > 1000
    count = page.count("slider")
    p.click("#reset-sliders")
    page.wait("slider", count)
    np.testing.assert_array_equal(page.pixels("#slider-image"), before)  # back to the chosen code


def test_keyboard_alone_moves_a_slider(page):
    p = page.page
    p.focus("#temperature")
    for _ in range(40):  # Tab from the sample controls, past the samples, to the first slider
        p.keyboard.press("Tab")
        if p.evaluate("document.activeElement.matches('#sliders input[type=range]')"):
            break
    else:
        pytest.fail("Tab never reached a slider")
    slider = p.evaluate("document.activeElement.id")
    assert slider == p.locator("#sliders input[type=range]").first.get_attribute("id")
    assert p.evaluate("document.activeElement.labels[0].textContent") == "z" + slider.split("-")[1]  # labelled
    value, before = float(p.input_value(f"#{slider}")), page.pixels("#slider-image")
    for _ in range(3):  # 0.1 per press
        p.keyboard.press("ArrowRight")
    target, dim = value + 0.3, int(slider.split("-")[1])
    p.wait_for_function(  # the image drawn from the code the last press set
        "([j, t]) => window.__drawn.some((e) => e.view === 'slider' && Math.abs(e.z[j] - t) < 1e-6)",
        arg=[dim, target], timeout=WAIT_MS)
    assert float(p.input_value(f"#{slider}")) == pytest.approx(target)
    assert np.abs(page.pixels("#slider-image") - before).sum() > 0


def test_interpolation_renders_its_frames(page):
    p = page.page
    count = page.count("interpolation")
    p.fill("#steps", "6")
    p.check("input[name=path][value=spherical]")
    p.wait_for_function("([n]) => window.__drawn.filter((e) => e.view === 'interpolation' && e.frames === 6 "
                        "&& e.path === 'spherical').length > 0 && window.__drawn.length > n", arg=[count])
    strip = page.pixels("#strip").reshape(28, 6 * 29 - 1, 4)
    tiles = [strip[:, i * 29 : i * 29 + 28, 0] for i in range(6)]
    assert all(tile.std() > 5 for tile in tiles)  # every frame drawn: images, not blank
    assert np.abs(tiles[0] - tiles[-1]).sum() > 1000  # from A to B
    # Choosing test images sets A, then B.
    count = page.count("interpolation")
    p.locator("#test-images button").nth(5).click()
    p.locator("#test-images button").nth(6).click()
    detail = page.wait("interpolation", count + 1)
    assert detail["frames"] == 6
    assert "A: test image 6. B: test image 7." == p.inner_text("#endpoints-note")
    assert p.locator("#test-images button[aria-pressed=true]").count() == 2
    # The animation steps through the frames.
    if p.get_attribute("#play", "aria-pressed") != "true":
        p.click("#play")
    first = page.pixels("#animation")
    for _ in range(50):  # a frame every 120 ms
        p.wait_for_timeout(100)
        if np.abs(page.pixels("#animation") - first).sum() > 0:
            break
    else:
        pytest.fail("the animation did not move in 5 s")


def test_uploads_bad_and_good(page, splits):
    p = page.page
    for name, data, fragment in (
        ("notes.png", b"<img src=x onerror=alert(1)>", "not an image file"),
        ("small.png", png_bytes(np.zeros((10, 10, 1))), "the image is 10x10 pixels, the model takes 28x28"),
    ):
        with p.expect_response(lambda r: "/v1/encode" in r.url) as answer:
            p.set_input_files("#upload-a", files=[{"name": name, "mimeType": "image/png", "buffer": data}])
        assert answer.value.status == 400
        p.wait_for_function("(name) => document.querySelector('#upload-message').textContent.includes(name)", arg=name)
        message = p.inner_text("#upload-message")
        assert message.startswith(f"Image A ({name}) was not used: ") and fragment in message, message
        assert p.evaluate("document.querySelector('#upload-message').children.length") == 0  # text, never HTML
    count = page.count("interpolation")
    image = splits.x_test[100].astype(np.float32) / 255.0
    p.set_input_files("#upload-b", files=[{"name": "coat.png", "mimeType": "image/png", "buffer": png_bytes(image)}])
    page.wait("interpolation", count)
    assert "B: the upload coat.png." in p.inner_text("#endpoints-note")


def test_conditional_two_dimensional_page(browser, conditional_2d_artifacts, splits):
    with serving(conditional_2d_artifacts) as server:
        explorer = Page(browser, server)
        p = explorer.page
        try:
            explorer.wait("manifold", 0)
            assert explorer.problems == []
            assert "conditional on 10 classes" in p.inner_text("#model-summary")
            assert p.is_visible("#class-picker") and p.is_visible("#upload-class-picker")
            assert p.is_visible("#manifold-section") and p.locator("#sliders input[type=range]").count() == 2
            assert "Ranked by each dimension's KL" in p.inner_text("#ranking-note")  # from evaluation.json
            # One class for every sample: the grid changes.
            before, count = explorer.pixels("#samples canvas"), explorer.count("samples")
            p.select_option("#class", "7")
            explorer.wait("samples", count)
            assert np.abs(explorer.pixels("#samples canvas") - before).sum() > 1000
            # The pointer over the plane decodes the code under it; so do the arrow keys.
            plane = p.locator("#manifold")
            box = plane.bounding_box()
            count = explorer.count("pointer")
            plane.hover(position={"x": box["width"] * 0.2, "y": box["height"] * 0.3})  # scrolls it into view
            explorer.wait("pointer", count)
            z = [float(v) for v in p.inner_text("#manifold-position").strip("z =()").split(",")]
            assert z[0] < 0 < z[1] and z[0] == pytest.approx(-1.5 * z[1], abs=0.02)  # 20% across, 30% down
            count = explorer.count("pointer")
            p.focus("#manifold")
            p.keyboard.press("ArrowUp")
            explorer.wait("pointer", count)
            # An upload is encoded and marked on the plane (the plane is redrawn with its mark).
            plane, count = explorer.pixels("#manifold"), explorer.count("interpolation")
            image = splits.x_test[7].astype(np.float32) / 255.0
            p.set_input_files("#upload-a", files=[{"name": "up.png", "mimeType": "image/png",
                                                   "buffer": png_bytes(image)}])
            explorer.wait("interpolation", count)
            p.wait_for_timeout(200)
            assert np.abs(explorer.pixels("#manifold") - plane).sum() > 0
        finally:
            p.close()


# The page's HTTP: headers, and nothing but its own files


def test_page_and_static_files_carry_the_security_headers(live_server):
    for path, (name, content_type) in static.FILES.items():
        status, headers, body = request(live_server, "GET", path)
        assert status == 200 and headers["Content-Type"] == content_type, path
        csp = headers["Content-Security-Policy"]
        assert csp == static.CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        with open(os.path.join(os.path.dirname(static.__file__), static.FOLDER, name), "rb") as f:
            assert body == f.read()
    status, headers, body = request(live_server, "HEAD", "/")
    assert status == 200 and body == b"" and headers["Content-Security-Policy"]
    status, _, body = request(live_server, "POST", "/", b"{}")
    assert status == 405 and "use GET" in error_of(status, body)


@pytest.mark.parametrize("path", [
    "/../serving/app.py", "/explorer/../app.py", "/explorer/%2e%2e/app.py", "/explorer/..%2fapp.py",
    "/explorer/", "/explorer", "/explorer/index.html", "/index.html", "/explorer//etc/passwd", "//etc/passwd",
    "/explorer/explorer.js/..", "/explorer/EXPLORER.JS", "/explorer/explorer.js%00.html", "/%2e%2e/%2e%2e/etc/passwd",
    "/explorer/../../manifest.json", "/" + TEST_IMAGES, "/manifest.json",
])
def test_static_paths_are_a_fixed_list(live_server, path):
    status, headers, body = request(live_server, "GET", path)
    assert status == 404 and headers["Content-Type"] == "application/json", (path, status)
    error_of(status, body)


# The API under the page


def test_encode_model_and_test_images_routes(live_server, serving_runtime, splits):
    x = splits.x_test[:NUM_TEST_IMAGES].astype(np.float32) / 255.0
    status, _, body = request(live_server, "GET", "/v1/test-images?format=json")
    assert status == 200
    shipped = json.loads(body)
    assert shipped["shape"] == [NUM_TEST_IMAGES, 28, 28, 1] and "labels" not in shipped
    np.testing.assert_array_equal(np.array(shipped["images"], np.float32), x)  # the first test images, exactly
    status, headers, png = request(live_server, "GET", "/v1/test-images")
    assert status == 200 and headers["Content-Type"] == "image/png"
    z_mean, z_log_var = serving_runtime.encode(x[:3])
    status, _, body = request(live_server, "POST", "/v1/encode", {"images": x[:3].tolist()})
    codes = json.loads(body)
    assert status == 200 and codes["shape"] == [3, 8] and "images" not in codes
    np.testing.assert_allclose(codes["z"], z_mean, atol=1e-6)
    np.testing.assert_allclose(codes["z_log_var"], z_log_var, atol=1e-6)
    status, _, body = request(live_server, "POST", "/v1/encode", png_bytes(x[0]), {"Content-Type": "image/png"})
    codes = json.loads(body)
    assert status == 200
    np.testing.assert_allclose(codes["z"], z_mean[:1], atol=1e-6)
    np.testing.assert_array_equal(np.array(codes["images"], np.float32), x[:1])  # the pixels the model read
    for body, headers, fragment in (
        (b"GIF89a", {"Content-Type": "image/gif"}, "not an image file"),
        (b"x", {"Content-Type": "text/plain"}, "Content-Type 'text/plain' is not accepted"),
        ({"images": x[:1].tolist(), "label": 1}, {}, "not conditional"),
    ):
        status, _, answer = request(live_server, "POST", "/v1/encode", body, headers)
        assert fragment in error_of(status, answer)
    status, _, body = request(live_server, "GET", "/v1/model")
    facts = json.loads(body)
    assert facts == {
        "latent_dim": 8, "input_shape": [28, 28, 1], "num_classes": None, "prior": "normal", "num_components": None,
        "levels": None, "likelihood": "bernoulli", "models": ["encoder", "decoder"], KL_PER_DIM: None,
        "test_images": NUM_TEST_IMAGES, "max_batch_size": MAX_BATCH_SIZE, "max_body_bytes": MAX_BODY_BYTES,
    }
    status, _, body = request(live_server, "POST", "/v1/generate", {"n": 3, "seed": 4, "format": "json"})
    np.testing.assert_array_equal(np.array(json.loads(body)["z"], np.float32), serving_runtime.sample_z(3, 4))


def test_conditional_export_records_kl_and_test_images_of_every_class(conditional_2d_artifacts, splits):
    from kvae_serving.runtime import Runtime
    from kvae_serving.test_images import load

    runtime = Runtime(conditional_2d_artifacts)
    kl = runtime.manifest[KL_PER_DIM]  # from the run's evaluation.json
    assert len(kl) == 2 and all(v >= 0 for v in kl)
    images, labels = load(runtime)
    assert len(images) == NUM_TEST_IMAGES and list(labels) == [i % 10 for i in range(NUM_TEST_IMAGES)]
    pool = splits.x_test[:256].astype(np.float32) / 255.0
    for image, label in zip(images, labels):  # each is a real test image of the class its position says
        matches = np.flatnonzero((pool == image).all(axis=(1, 2, 3)))
        assert len(matches) and splits.y_test[matches[0]] == label


def test_bad_kl_per_dim_is_refused(serving_artifacts, tmp_path):
    from kvae_serving.errors import ArtifactError
    from kvae_serving.runtime import Runtime

    copy = tmp_path / "artifacts"
    shutil.copytree(serving_artifacts, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for value, fragment in (([1.0] * 7, "received 7 values"), ([1.0] * 7 + [float("nan")], "NaN or Inf"),
                            ("big", "received str"), ([1.0] * 7 + [True], "non-number"), ([0.5] * 8, None)):
        (copy / "manifest.json").write_text(json.dumps({**manifest, KL_PER_DIM: value}))
        if fragment is None:
            assert Runtime(copy).manifest[KL_PER_DIM] == value
        else:
            with pytest.raises(ArtifactError, match=fragment):
                Runtime(copy)


def test_artifacts_without_test_images_still_serve_the_page(browser, serving_artifacts, tmp_path):
    """Artifacts exported before test_images.png: /v1/test-images says so; the page ranks by its samples."""
    copy = tmp_path / "artifacts"
    shutil.copytree(serving_artifacts, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"][TEST_IMAGES]
    (copy / TEST_IMAGES).unlink()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with serving(copy) as server:
        assert json.loads(request(server, "GET", "/v1/model")[2])["test_images"] == 0
        status, _, body = request(server, "GET", "/v1/test-images")
        assert "re-export the model" in error_of(status, body)
        explorer = Page(browser, server, views=("samples", "slider"))
        try:
            assert explorer.problems == []
            assert "ship no test images" in explorer.page.inner_text("#test-images-note")
            assert "16 samples, encoded again" in explorer.page.inner_text("#ranking-note")
        finally:
            explorer.page.close()
