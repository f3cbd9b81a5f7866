"""`nbp play` end to end: the page served as `nbp play` serves it, driven by headless Chromium (Debian's chromium and
chromedriver): a few key presses, then running play for some seconds. Frames per second as the browser receives
them (PNG encoding, the WebSocket and the page included) beside the session's own seconds per frame; a screenshot
of the page (the README's).

    .venv/bin/python bench/play_page.py --model runs/world_crafter_tiny/lm.safetensors \\
        --autoencoder runs/tokenizer_crafter/tokenizer.safetensors --episodes data/crafter/test --clip 3 \\
        --screenshot docs/images/play.png
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from nbp.play.server import PlayConfig, build_game, make_app
from nbp.runtime import describe_cpu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit_json  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=960,700")


def serve(cfg: PlayConfig):
    """The game and its server, started in a thread on 127.0.0.1."""
    game = build_game(cfg)
    server = uvicorn.Server(uvicorn.Config(make_app(game), host="127.0.0.1", port=cfg.port, log_level="warning",
                                           ws="auto"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return game, server


def browser(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--autoencoder", required=True)
    parser.add_argument("--episodes", required=True, help="a folder of episodes")
    parser.add_argument("--clip", type=int, default=0)
    parser.add_argument("--keys", default="ddwwaas", help="key presses before running (Crafter's map)")
    parser.add_argument("--seconds", type=float, default=10, help="running play's length")
    parser.add_argument("--fps", type=float, default=1000, help="the page's pace cap (1000: as fast as it goes)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, 2 here)")
    parser.add_argument("--screenshot")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PlayConfig(model=args.model, autoencoder=args.autoencoder, episodes=args.episodes, clip=args.clip,
                     port=args.port, fps=args.fps, device="cpu", out=tempfile.mkdtemp())
    game, server = serve(cfg)
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        try:
            driver.get(f"http://127.0.0.1:{args.port}")
            wait = WebDriverWait(driver, 60)
            text = lambda element_id: driver.find_element(By.ID, element_id).text
            wait.until(lambda d: text("step") == "0")
            body = driver.find_element(By.TAG_NAME, "body")
            for count, key in enumerate(args.keys, start=1):
                body.send_keys(key)
                wait.until(lambda d, count=count: text("step") == str(count))
            before, start = int(text("step")), time.perf_counter()
            body.send_keys(Keys.ENTER)
            time.sleep(args.seconds)
            body.send_keys(Keys.ENTER)
            played, seconds = int(text("step")) - before, time.perf_counter() - start
            page_fps = float(text("fps"))
            if args.screenshot:
                driver.save_screenshot(args.screenshot)
        finally:
            driver.quit()
            server.should_exit = True
    stats = game.session.stats
    row = {"cpu": describe_cpu(), "threads": torch.get_num_threads(), "model": args.model, "steps_running": played, "seconds": seconds,
           "page_frames_per_second": played / seconds, "page_reading_fps": page_fps,
           "session_ms": 1000 * stats["seconds"], "model_ms": 1000 * stats["model_seconds"],
           "decode_ms": 1000 * stats["decode_seconds"]}
    print("| frames received / s (running) | the page's own reading | session ms / frame (model + decoding) | "
          "model ms | decoding ms |\n|---|---|---|---|---|\n"
          f"| {row['page_frames_per_second']:.1f} | {page_fps:.1f} | {row['session_ms']:.1f} | {row['model_ms']:.1f} | "
          f"{row['decode_ms']:.1f} |")
    emit_json(row, args.json)


if __name__ == "__main__":
    main()
