"""`nbp play`: key maps, the page's messages (step, undo, restart, save) through the app's WebSocket, and the page
driven in a real headless Chromium: keys pressed advance the step counter and change the picture."""
import json
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from test_session import far_files, world_files  # noqa: F401 (fixtures)
from test_world_pipeline import world  # noqa: F401 (fixture)

from nbp.config import ConfigError, InputError
from nbp.data.episodes import load_episode
from nbp.play.keymaps import CRAFTER_NAMES, key_map
from nbp.play.server import PlayConfig, build_game, make_app

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


def test_key_maps_follow_the_action_count_or_a_file(tmp_path):
    crafter = key_map("auto", 17)
    assert crafter.names == CRAFTER_NAMES and crafter.keys["w"] == CRAFTER_NAMES.index("move_up")
    assert crafter.keys[" "] == CRAFTER_NAMES.index("do") and crafter.idle == 0
    four = key_map("auto", 4)
    assert four.names == [f"action {i}" for i in range(4)] and four.keys == {"0": 0, "1": 1, "2": 2, "3": 3}
    path = tmp_path / "dmlab.json"
    path.write_text(json.dumps({"names": ["noop", "forward", "left", "right"], "keys": {"W": 1, "a": 2, "d": 3}}))
    assert key_map(str(path), 4).keys == {"w": 1, "a": 2, "d": 3}
    with pytest.raises(InputError, match="names 4 actions; the model has 17"):
        key_map(str(path), 17)
    with pytest.raises(InputError, match="use auto, crafter, numbered or a JSON map file"):
        key_map("minecraft.json", 4)
    path.write_text(json.dumps({"names": ["a", "b"], "keys": {"x": 5}}))
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        key_map(str(path), 2)


def play_config(files, tmp_path, **fields) -> PlayConfig:
    model, autoencoder, episode = files
    return PlayConfig(model=str(model), autoencoder=str(autoencoder), episode=str(episode), context_frames=3,
                      out=str(tmp_path / "sessions"), device="cpu", undo_steps=4, **fields)


@pytest.fixture
def tokens_episode(world_files):  # noqa: F811
    return world_files


@pytest.fixture
def far_episode(far_files, tmp_path):  # noqa: F811
    """An episode file for the FAR fixture: its 4 random frames and actions."""
    from nbp.io.media import save_video, to_uint8

    model, dcae, video = far_files
    save_video(tmp_path / "ep.mp4", to_uint8(video.transpose(0, 1)), fps=10, lossless=True)
    np.save(tmp_path / "ep.actions.npy", np.array([0, 1, 2, 3]))
    return model, dcae, tmp_path / "ep.mp4"


@pytest.mark.parametrize("family", ["tokens", "far"])
def test_the_page_steps_undoes_restarts_and_saves_over_its_websocket(family, request, tmp_path):
    from starlette.testclient import TestClient

    files = request.getfixturevalue(f"{family}_episode")
    game = build_game(play_config(files, tmp_path))
    with TestClient(make_app(game)) as client:
        assert "nbp play" in client.get("/").text
        with client.websocket_connect("/ws") as ws:
            hello = ws.receive_json()
            assert hello["type"] == "hello" and hello["step"] == 0 and hello["image"].startswith("data:image/png")
            frames = []
            for action in (3, 3, 1):
                ws.send_json({"type": "step", "action": action})
                frames.append(ws.receive_json())
            assert [f["step"] for f in frames] == [1, 2, 3] and frames[-1]["action"] == 1 and frames[-1]["undo"]
            assert frames[0]["model_ms"] > 0 and frames[0]["decode_ms"] > 0
            ws.send_json({"type": "undo"})
            assert ws.receive_json()["image"] == frames[1]["image"]
            ws.send_json({"type": "step", "action": 99})
            assert "action must be an id in" in ws.receive_json()["message"]
            ws.send_json({"type": "jump"})
            assert "unknown message type 'jump'" in ws.receive_json()["message"]
            ws.send_json({"type": "save"})
            saved = ws.receive_json()["path"]
            ws.send_json({"type": "reset"})
            restarted = ws.receive_json()
            assert restarted["step"] == 0 and restarted["image"] == hello["image"]
    video, actions = load_episode(saved)
    assert len(video) == 3 and actions[1:].tolist() == [3, 3]


def test_play_settings_are_checked(world_files, tmp_path):  # noqa: F811
    with pytest.raises(InputError, match="give episode=FILE or episodes=FOLDER"):
        build_game(play_config(world_files, tmp_path, episodes="data"))
    with pytest.raises(InputError, match="fewer than start \\+ context_frames"):
        build_game(play_config(world_files, tmp_path, start=39))
    with pytest.raises(ConfigError, match="port must be in 1..65535"):
        build_game(play_config(world_files, tmp_path, port=0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(world_files, tmp_path):  # noqa: F811
    """The page of the token world model served by uvicorn on a free local port, as `nbp play` serves it."""
    import uvicorn

    game = build_game(play_config(world_files, tmp_path))
    server = uvicorn.Server(uvicorn.Config(make_app(game), host="127.0.0.1", port=free_port(), log_level="warning",
                                           ws="auto"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}", game
    server.should_exit = True
    thread.join(10)


@pytest.mark.skipif(not os.path.exists(CHROMEDRIVER) and not os.environ.get("NBP_REQUIRE_BROWSER"),
                    reason="no chromium-driver here (setup.sh --dev installs it; CI requires it)")
def test_a_headless_browser_plays_the_page(served, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, game = served
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1000,640"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        text = lambda element_id: driver.find_element(By.ID, element_id).text
        wait.until(lambda d: d.find_element(By.ID, "frame").get_attribute("src").startswith("data:image/png"))
        first = driver.find_element(By.ID, "frame").get_attribute("src")
        assert text("step") == "0" and len(driver.find_elements(By.CSS_SELECTOR, "#actions button")) == 17
        body = driver.find_element(By.TAG_NAME, "body")
        for count, key in enumerate("ddw", start=1):  # Crafter's keys: move right, right, up
            body.send_keys(key)
            wait.until(lambda d, count=count: text("step") == str(count))
        assert driver.find_element(By.ID, "frame").get_attribute("src") != first
        assert text("action") == "move_up" and float(text("model")) > 0
        driver.find_element(By.ID, "action-5").click()  # the on-screen "do" button
        wait.until(lambda d: text("step") == "4" and text("action") == "do")
        body.send_keys(Keys.ENTER)  # run: steps follow one another without keys
        wait.until(lambda d: int(text("step")) >= 8)
        body.send_keys(Keys.ENTER)
        assert float(text("fps")) > 0
        steps = int(text("step"))
        driver.find_element(By.ID, "save").click()
        wait.until(lambda d: text("status").startswith("saved"))
        assert load_episode(text("status").removeprefix("saved "))[1].shape == (steps + 1,)
        if os.environ.get("NBP_SCREENSHOT"):  # docs/images/play.png is taken this way
            driver.save_screenshot(os.environ["NBP_SCREENSHOT"])
    finally:
        driver.quit()


def test_nbp_play_serves_the_page_and_its_socket_from_the_command_line(world_files, tmp_path):  # noqa: F811
    """As a user starts it: `nbp play ...` prints the address, serves the page on 127.0.0.1 and plays a step."""
    import subprocess
    import sys
    import urllib.request

    from websockets.sync.client import connect

    model, tokenizer, episode = world_files
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "nbp", "play", f"model={model}", f"autoencoder={tokenizer}",
                                f"episode={episode}", "context_frames=3", f"port={port}", f"out={tmp_path}",
                                "device=cpu", "threads=1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert f"open http://127.0.0.1:{port}" in line, line
        deadline = time.time() + 60
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                assert time.time() < deadline, "the page never came up"
                time.sleep(0.2)
        assert "<title>nbp play</title>" in page
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            assert json.loads(ws.recv())["type"] == "hello"
            ws.send(json.dumps({"type": "step", "action": 2}))
            frame = json.loads(ws.recv())
        assert frame["step"] == 1 and frame["action"] == 2
    finally:
        process.terminate()
        process.wait(30)
