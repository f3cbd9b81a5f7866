"""`nbp play`: a world model in the browser. A local page (127.0.0.1 only) streams the frames of a `WorldSession`
over a WebSocket (Starlette on uvicorn, the `play` extra) and sends back the actions of the keys pressed.

The page steps once per key press, or runs (the button, or Enter) at up to `fps` frames per second with the key
held (the idle action when none is). It shows the step count, frames per second as the page receives them and the
model's and decoder's milliseconds per frame; it restarts from the episode, undoes steps and saves the session as
an episode (`out/session-*.mp4` + `.actions.npy`) that `world-eval`, `far-eval` and `reset` read.

Messages, as JSON: the page sends {"type": "step", "action": k}, {"type": "reset"}, {"type": "undo"} or
{"type": "save"}; the server answers each with {"type": "frame", ...}, {"type": "saved", "path": ...} or
{"type": "error", "message": ...}, after a first {"type": "hello", ...} with the key map.
"""
from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nbp.config import InputError, UserError
from nbp.data.episodes import list_episodes, load_episode
from nbp.extras import require
from nbp.pipelines.far import FARPipeline
from nbp.pipelines.session import WorldSession, names_far
from nbp.play.keymaps import KeyMap, key_map
from nbp.settings.pipelines import PlayConfig

PAGE = Path(__file__).with_name("page.html")
HOST = "127.0.0.1"  # the page and its socket are never served beyond this machine


def open_session(cfg: PlayConfig) -> WorldSession:
    return WorldSession.from_files(cfg.model, cfg.autoencoder, resolution=cfg.resolution, device=cfg.device,
                                   seed=cfg.seed, fps=cfg.fps, undo_steps=cfg.undo_steps, short_window=cfg.short_window,
                                   sampling=cfg.far_sampling if names_far(cfg.model) else cfg.sampling)


def episode_context(cfg: PlayConfig, resolution: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The context frames (T, H, W, 3) uint8, their actions (T,) and where they come from."""
    path = Path(cfg.episode) if cfg.episode else None
    if path is None:
        found = list_episodes(cfg.episodes)
        if cfg.clip >= len(found):
            raise InputError(f"clip={cfg.clip}, but {cfg.episodes} holds {len(found)} episodes")
        path = found[cfg.clip]
    video, actions = load_episode(path, resolution)
    if len(video) < cfg.start + cfg.context_frames:
        raise InputError(f"{path} has {len(video)} frames: fewer than start + context_frames = "
                         f"{cfg.start + cfg.context_frames}")
    span = slice(cfg.start, cfg.start + cfg.context_frames)
    return video[span], actions[span], f"{path.name}, frames {span.start}-{span.stop - 1}"


def png(frame: np.ndarray) -> str:
    """A uint8 (H, W, 3) frame as a data URL."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class Game:
    """A session as the page plays it: one message at a time (a lock: steps run in worker threads)."""

    def __init__(self, session: WorldSession, video: np.ndarray, actions: np.ndarray, keys: KeyMap, out: str | Path,
                 source: str, fps: float):
        self.session, self.video, self.actions, self.keys = session, video, actions, keys
        self.out, self.source, self.fps = Path(out), source, fps
        self.lock = threading.Lock()
        session.reset(video, actions)

    def hello(self) -> dict:
        return {**self.frame_message(), **self.keys.to_json(), "type": "hello", "fps": self.fps, "source": self.source,
                "family": "FAR" if isinstance(self.session.pipeline, FARPipeline) else "tokens"}

    def frame_message(self) -> dict:
        s = self.session
        model_ms, decode_ms = (1000 * t for t in s.times[-1][:2]) if s.times else (0.0, 0.0)
        return {"type": "frame", "image": png(s.frames[-1]), "step": len(s.times), "action": s.actions[-1],
                "model_ms": model_ms, "decode_ms": decode_ms, "undo": s.can_undo}

    def handle(self, message: dict) -> dict:
        kind = message.get("type") if isinstance(message, dict) else None
        with self.lock:
            try:
                if kind == "step":
                    action = message.get("action")
                    if not isinstance(action, int) or not 0 <= action < len(self.keys.names):
                        raise InputError(f"action must be an id in [0, {len(self.keys.names) - 1}], got {action!r}")
                    self.session.step(action)
                elif kind == "reset":
                    self.session.reset(self.video, self.actions)
                elif kind == "undo":
                    self.session.undo()
                elif kind == "save":
                    stamp = time.strftime("%Y%m%d-%H%M%S")
                    return {"type": "saved", "path": str(self.session.save(self.out / f"session-{stamp}"))}
                else:
                    raise InputError(f"unknown message type {kind!r}: step, reset, undo or save")
            except UserError as error:
                return {"type": "error", "message": str(error)}
            return self.frame_message()


def make_app(game: Game):
    """The page at / and its WebSocket at /ws."""
    require("starlette", "play", "nbp play's page")
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    page = PAGE.read_text()

    async def index(request) -> HTMLResponse:
        return HTMLResponse(page)

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(await run_in_threadpool(game.hello))
        try:
            while True:
                message = await websocket.receive_json()
                await websocket.send_json(await run_in_threadpool(game.handle, message))
        except WebSocketDisconnect:
            return

    return Starlette(routes=[Route("/", index), WebSocketRoute("/ws", socket)])


def build_game(cfg: PlayConfig) -> Game:
    cfg.validate()
    session = open_session(cfg)
    video, actions, source = episode_context(cfg, session.resolution)
    model = session.pipeline.far if isinstance(session.pipeline, FARPipeline) else session.pipeline.model
    count = model.config.num_classes if isinstance(session.pipeline, FARPipeline) else model.config.num_actions
    if count < 1:
        raise InputError(f"{cfg.model} takes no actions: play needs an action-conditioned world model")
    return Game(session, video, actions, key_map(cfg.keys, count), cfg.out, source, cfg.fps)


def play(cfg: PlayConfig) -> None:
    """Serve the page until interrupted."""
    require("uvicorn", "play", "nbp play's server")
    import torch
    import uvicorn

    torch.set_num_threads(cfg.threads or max(1, torch.get_num_threads() - 1))
    game = build_game(cfg)
    print(f"nbp play: {game.source} with {cfg.model}; open http://{HOST}:{cfg.port} (Ctrl-C stops)", flush=True)
    uvicorn.run(make_app(game), host=HOST, port=cfg.port, log_level="warning", ws="auto")
