"""End to end in headless Chromium: the page, the real gateway, a real gRPC server with a
tiny model. Pick, drop or snap (fake webcam) a photo, wait for the 3D viewer, check that the
WebGL canvas drew the mesh, download the GLB, and see the error messages for files that are
not photos.

Needs Debian's `chromium` and `chromium-driver` packages (no browser is downloaded); skips
when they are absent.
"""

from __future__ import annotations

import base64
import io
import shutil
import socket
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import trimesh
import uvicorn
from grpc_harness import RunningServer
from PIL import Image

from facerecon.reconstructor import Reconstructor
from facerecon_web import GatewaySettings, create_app
from facerecon_web.headless import CHROMIUM_FLAGS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver: apt-get install -y chromium chromium-driver",
)
# Chromium's fake camera answers getUserMedia, granted without a prompt.
BROWSER_FLAGS = (
    *CHROMIUM_FLAGS,
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--window-size=1200,1000",
)
BACKGROUND = np.array([0xF2, 0xF2, 0xF2])  # the viewer's clear colour (src/viewer.js)
RECONSTRUCT_TIMEOUT_S = 120


class RunningGateway:
    """The gateway served by uvicorn on a loopback port, in a thread."""

    def __init__(self, settings: GatewaySettings):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(create_app(settings), log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, args=([self.socket],))

    def __enter__(self) -> RunningGateway:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            self.thread.join(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


@pytest.fixture(scope="module")
def gateway_url(tiny_weights):
    with RunningServer(Reconstructor(tiny_weights, device="cpu")) as server:
        with RunningGateway(GatewaySettings(service=server.target)) as gateway:
            yield gateway.url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_page(browser, url: str) -> None:
    browser.get(url)
    wait_for_state(browser, {"idle"}, timeout=30)


def wait_for_state(browser, states: set[str], timeout: float = RECONSTRUCT_TIMEOUT_S) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    state = lambda d: d.find_element("tag name", "body").get_attribute("data-state")  # noqa: E731
    WebDriverWait(browser, timeout).until(lambda d: state(d) in states)
    return state(browser)


def choose_file(browser, path: Path) -> None:
    browser.find_element("id", "file").send_keys(str(path))


def canvas_pixels(browser) -> np.ndarray:
    """The viewer's WebGL canvas as RGB (readable: preserveDrawingBuffer is on)."""
    url = browser.execute_script("return document.querySelector('#viewer canvas').toDataURL()")
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def assert_mesh_drawn(browser) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    viewer = browser.find_element("id", "viewer")
    WebDriverWait(browser, 30).until(lambda d: viewer.get_attribute("data-rendered") == "true")
    pixels = canvas_pixels(browser)
    drawn = np.abs(pixels - BACKGROUND).max(axis=-1) > 12
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert 0.02 < drawn.mean() < 0.95, f"{drawn.mean():.3f} of the canvas differs from background"
    assert pixels[drawn].std() > 1.0  # shaded, not one flat colour


def test_upload_shows_the_mesh_views_pose_and_downloads(
    browser, gateway_url, astronaut_jpeg, tmp_path
):
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    open_page(browser, gateway_url)
    choose_file(browser, photo)
    state = wait_for_state(browser, {"ready", "error"})
    assert state == "ready", browser.find_element("id", "error").text
    assert_mesh_drawn(browser)

    views = browser.find_elements("css selector", "#views img")
    assert len(views) == 1 + len(GatewaySettings().views)  # frontal + the strip
    assert all(browser.execute_script("return arguments[0].naturalWidth", v) > 0 for v in views)
    assert "yaw" in browser.find_element("id", "pose").text
    assert "network" in browser.find_element("id", "timings").text

    links = {
        a.text.split()[0]: a.get_attribute("href")
        for a in browser.find_elements("css selector", "#downloads a")
    }
    assert set(links) == {"GLB", "PLY", "OBJ"}
    with urllib.request.urlopen(links["GLB"], timeout=30) as reply:
        glb = reply.read()
    assert glb[:4] == b"glTF"
    mesh = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh")
    assert len(mesh.faces) > 100
    assert mesh.visual.kind == "vertex"  # coloured per vertex


ICT = Path(__file__).resolve().parents[2] / "shared" / "facemodel" / "ict_face_light.npz"


@pytest.fixture(scope="module")
def fitting_gateway_url(tiny_weights):
    """The gateway in front of a server with the ICT face model."""
    if not ICT.is_file():
        pytest.skip("needs ../shared/facemodel/ict_face_light.npz")
    with RunningServer(None, weights=tiny_weights, face_model=ICT) as server:
        with RunningGateway(GatewaySettings(service=server.target)) as gateway:
            yield gateway.url


def test_fitted_head_is_shown_textured_and_downloadable(
    browser, fitting_gateway_url, astronaut_jpeg, tmp_path
):
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    open_page(browser, fitting_gateway_url)
    option = browser.find_element("id", "registration")
    assert option.is_displayed()
    option.click()
    choose_file(browser, photo)
    state = wait_for_state(browser, {"ready", "error"})
    assert state == "ready", browser.find_element("id", "error").text
    assert "vertices" in browser.find_element("id", "fitted-figures").text
    raw = canvas_pixels(browser)
    viewer = browser.find_element("id", "viewer")
    browser.execute_script("arguments[0].dataset.rendered = 'false'", viewer)
    browser.find_element("id", "show-fitted").click()
    assert_mesh_drawn(browser)
    fitted = canvas_pixels(browser)
    assert np.abs(fitted - raw).max(axis=-1).mean() > 5  # another mesh, textured
    assert browser.find_element("id", "show-fitted").get_attribute("aria-pressed") == "true"
    links = [a.text for a in browser.find_elements("css selector", "#downloads a")]
    assert any(text.startswith("FITTED GLB") for text in links)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, [e["message"] for e in errors]  # e.g. the texture refused by the CSP


DROP_FILE = """
const [data, name, type] = arguments;
const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, { type }));
const zone = document.getElementById("drop");
zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true }));
zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
"""


def test_dropped_photo_is_reconstructed(browser, gateway_url, astronaut_jpeg):
    open_page(browser, gateway_url)
    data = base64.b64encode(astronaut_jpeg).decode()
    browser.execute_script(DROP_FILE, data, "astronaut.jpg", "image/jpeg")
    state = wait_for_state(browser, {"ready", "error"})
    assert state == "ready", browser.find_element("id", "error").text
    assert_mesh_drawn(browser)


def test_webcam_photo_is_reconstructed(browser, gateway_url):
    open_page(browser, gateway_url)
    browser.find_element("id", "camera-start").click()
    from selenium.webdriver.support.ui import WebDriverWait

    video = browser.find_element("id", "camera-video")
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return arguments[0].videoWidth", video) > 0
    )
    browser.find_element("id", "camera-snap").click()
    state = wait_for_state(browser, {"ready", "error"})
    assert state == "ready", browser.find_element("id", "error").text
    assert_mesh_drawn(browser)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.txt", b"not a photo", "is not a JPEG, PNG, WebP or BMP image"),  # the page's check
        (
            "fake.jpg",
            b"not a photo either",
            "is not a JPEG, PNG, WebP or BMP image",
        ),  # the gateway's
    ],
)
def test_files_that_are_not_photos_show_an_error(
    browser, gateway_url, tmp_path, name, data, message
):
    path = tmp_path / name
    path.write_bytes(data)
    open_page(browser, gateway_url)
    choose_file(browser, path)
    assert wait_for_state(browser, {"ready", "error"}, timeout=30) == "error"
    error = browser.find_element("id", "error")
    assert error.is_displayed() and message in error.text


def test_undecodable_photo_shows_the_services_message(
    browser, gateway_url, astronaut_jpeg, tmp_path
):
    path = tmp_path / "broken.jpg"
    path.write_bytes(astronaut_jpeg[:300])
    open_page(browser, gateway_url)
    choose_file(browser, path)
    assert wait_for_state(browser, {"ready", "error"}, timeout=60) == "error"
    assert "image" in browser.find_element("id", "error").text.lower()
