"""Keys to actions for `nbp play`: a `KeyMap` names each action id and the browser key (`KeyboardEvent.key`, lower
case) that plays it. Crafter's is the game's own (crafter's `run_gui.py`); a model of another action count gets the
digits and letters in order, with its actions named by number (DMLab's and Minecraft's in FAR_Long's data are four
ids whose meaning the files do not say: a map file can name them); a JSON map file gives any other:

    {"names": ["noop", "forward", "left", "right"], "keys": {"w": 1, "a": 2, "d": 3}, "idle": 0}
"""
from __future__ import annotations

import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path

from nbp.config import InputError

CRAFTER_NAMES = ["noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
                 "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
                 "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword"]
CRAFTER_KEYS = {"a": 1, "d": 2, "w": 3, "s": 4, " ": 5, "tab": 6, "r": 7, "t": 8, "f": 9, "p": 10,
                "1": 11, "2": 12, "3": 13, "4": 14, "5": 15, "6": 16}


@dataclass
class KeyMap:
    names: list[str]  # one per action id
    keys: dict[str, int]  # browser key (lower case) -> action id
    idle: int = 0  # the action played while no key is held (the null action where a model has none)

    def check(self, actions: int) -> KeyMap:
        """This map, refused unless it fits a model of `actions` actions."""
        if len(self.names) != actions:
            raise InputError(f"the key map names {len(self.names)} actions; the model has {actions}")
        bad = {key: action for key, action in self.keys.items() if not 0 <= action < actions}
        if bad or not 0 <= self.idle < actions:
            raise InputError(f"key map actions must lie in [0, {actions - 1}]: {bad or {'idle': self.idle}}")
        return self

    def to_json(self) -> dict:
        return asdict(self)


def numbered(actions: int) -> KeyMap:
    """Actions 0.. on the keys 0-9, then a-z (the on-screen buttons play every one)."""
    keys = (string.digits + string.ascii_lowercase)[:actions]
    return KeyMap([f"action {i}" for i in range(actions)], {key: i for i, key in enumerate(keys)})


def key_map(spec: str, actions: int) -> KeyMap:
    """"auto" (Crafter's for 17 actions, else numbered), "crafter", "numbered", or a JSON file."""
    if spec == "auto":
        spec = "crafter" if actions == len(CRAFTER_NAMES) else "numbered"
    if spec == "crafter":
        return KeyMap(list(CRAFTER_NAMES), dict(CRAFTER_KEYS)).check(actions)
    if spec == "numbered":
        return numbered(actions)
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"keys={spec!r}: use auto, crafter, numbered or a JSON map file")
    try:
        data = json.loads(path.read_text())
        return KeyMap(list(data["names"]), {str(k).lower(): int(v) for k, v in data["keys"].items()},
                      int(data.get("idle", 0))).check(actions)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: not a key map ({error}); expected {{\"names\": [...], \"keys\": {{key: action}}}}") from None
