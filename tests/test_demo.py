"""Tests for cyclegan_tf.demo: the Gradio page of a tiny float32 run, called through its API
(gradio_client) and used in headless Chromium (Debian's `chromium`, driven by Playwright), against
what `translate` writes for the same image."""

import io
import shutil
import socket
import sys

import fixtures
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from cyclegan_tf import demo, sources, video

pytest.importorskip("gradio", reason='needs Gradio: pip install "cyclegan-tf[demo]"')
gradio_client = pytest.importorskip("gradio_client", reason="needs gradio_client")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    run_dir = str(root / "run")
    fixtures.make_run(run_dir)
    image = str(root / "photo.png")
    PIL.Image.fromarray(fixtures.random_image(37, 53, seed=1)).save(image)
    # What `translate` writes for it: the reference the page must show.
    summary = sources.load(run_dir, precision="float32").translate_files(image, str(root / "out"))
    with open(summary.written[0], "rb") as f:
        expected = tf.io.decode_png(f.read()).numpy()
    port = _free_port()
    app = demo.serve(run_dir, precision="float32", port=port, block=False)
    try:
        yield {
            "url": f"http://127.0.0.1:{port}/",
            "image": image,
            "expected": expected,
            "root": root,
            "run_dir": run_dir,
            "port": port,
        }
    finally:
        app.close()


def test_the_api_translates_like_translate(served):
    client = gradio_client.Client(served["url"], verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/translate", "/translate_video"} <= set(endpoints)
    result = client.predict(
        gradio_client.handle_file(served["image"]), "a2b", api_name="/translate"
    )
    assert result.endswith(".png")  # lossless
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(result)), served["expected"])
    other = client.predict(gradio_client.handle_file(served["image"]), "b2a", api_name="/translate")
    assert not np.array_equal(np.asarray(PIL.Image.open(other)), served["expected"])
    with pytest.raises(gradio_client.exceptions.AppError, match="not in the list of choices"):
        client.predict(gradio_client.handle_file(served["image"]), "ab", api_name="/translate")


def test_the_api_translates_a_video(served, tmp_path):
    av = pytest.importorskip("av", reason='needs PyAV: pip install "cyclegan-tf[video]"')
    source = str(tmp_path / "clip.mp4")
    fixtures.make_video(source, 32, 32, frames=4)
    client = gradio_client.Client(served["url"], verbose=False)
    result = client.predict(gradio_client.handle_file(source), "a2b", api_name="/translate_video")
    path = result["video"] if isinstance(result, dict) else result
    with av.open(path) as container:
        assert container.streams.video[0].frames == 4
        assert len(container.streams.audio) == 1


DRAWN = """img => {
    const r = img.getBoundingClientRect(), s = getComputedStyle(img);
    const top = r.top + parseFloat(s.paddingTop);
    const h = r.height - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom);
    const scale = Math.min(1, r.width / img.naturalWidth, h / img.naturalHeight);
    const [w, ht] = [img.naturalWidth * scale, img.naturalHeight * scale];
    const y = s.objectPosition.split(" ")[1];  // "50%" or "0px"
    const offset = y.endsWith("%") ? (h - ht) * parseFloat(y) / 100 : parseFloat(y);
    return [top + offset, w, ht];
}"""


def test_the_page_in_a_browser_shows_the_translation(served, tmp_path):
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip)")
    with playwright.sync_playwright() as p:
        # Debian's browser, not Playwright's own download (which cannot be fetched here).
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(served["url"])
            page.wait_for_selector("#image_in input[type=file]", state="attached", timeout=30_000)
            text = page.inner_text("body")
            # Which model, checkpoint/step and precision the page runs.
            assert "run directory" in text and "ckpt-3" in text and "float32" in text, text
            page.set_input_files("#image_in input[type=file]", served["image"])
            page.wait_for_selector("#image_in img", timeout=30_000)
            page.click("#translate_image")
            shown = page.wait_for_selector("#image_out img", timeout=60_000)
            data = page.request.get(shown.get_attribute("src")).body()
            # Input and translation are drawn at the same place and size (demo.CSS): the
            # picture inside each <img> box (object-fit scale-down, placed by object-position).
            drawn = [page.eval_on_selector(f"#image_{which} img", DRAWN) for which in ("in", "out")]
            assert drawn[0] == pytest.approx(drawn[1], abs=1), drawn
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        finally:
            browser.close()
    got = np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(got, served["expected"])


def test_a_busy_port_is_one_line(served):
    proc = fixtures.run_cli("demo", f"--model={served['run_dir']}", f"--port={served['port']}")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"Port {served['port']} on 127.0.0.1 is in use" in lines[0], lines


def test_without_gradio_the_demo_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    with pytest.raises(demo.MissingDemoExtraError, match=r'pip install "cyclegan-tf\[demo\]"'):
        demo.require()


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "float32"])
def test_a_video_is_batched_as_translate_batches_it(tmp_path, precision):
    # The page's video handler gives a model the frames per call `translate` gives it for its
    # precision, so the page writes the same file as `translate` does.
    pytest.importorskip("av", reason='needs PyAV: pip install "cyclegan-tf[video]"')

    class Recording:
        def __init__(self):
            self.precision, self.calls = precision, []

        def __call__(self, frames):
            self.calls.append(len(frames))
            return 255 - frames

    source = str(tmp_path / "clip.mp4")
    fixtures.make_video(source, 32, 32, frames=6)
    model = Recording()
    app = demo.build_app({"a2b": model}, "info")
    (handler,) = [f.fn for f in app.fns.values() if f.api_name == demo.VIDEO_API_NAME]
    handler(source, "a2b")
    per_call = video.batch_frames(precision)
    assert model.calls == [min(per_call, 6 - i) for i in range(0, 6, per_call)]
