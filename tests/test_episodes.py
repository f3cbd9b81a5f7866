"""Episode files (video + actions) as nbp reads them: every conversion explicit and tested, every file that does
not fit refused in one line naming it, nothing converted silently (issue 32, item 2 and 4)."""
import logging

import numpy as np
import pytest

from nbp.config import InputError
from nbp.data.episodes import list_episodes, load_episode

IDS = np.array([3, 0, 16, 5])


def episode(tmp_path, video=None, actions=IDS, name="ep.npz"):
    video = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8) if video is None else video
    path = tmp_path / name
    np.savez(path, video=video, actions=actions)
    return path


def test_integer_and_one_hot_actions_become_ids(tmp_path):
    assert np.array_equal(load_episode(episode(tmp_path))[1], IDS)
    assert np.array_equal(load_episode(episode(tmp_path, actions=IDS[:, None]))[1], IDS)
    assert np.array_equal(load_episode(episode(tmp_path, actions=np.eye(17)[IDS]))[1], IDS)  # (T, 17) one-hot
    assert np.array_equal(load_episode(episode(tmp_path, actions=IDS.astype(np.float32)))[1], IDS)  # 3.0 is 3


def test_a_float_video_in_unit_range_is_scaled_not_truncated(tmp_path):
    video = np.random.default_rng(1).random((4, 8, 8, 3)).astype(np.float32)
    frames, _ = load_episode(episode(tmp_path, video=video))
    assert frames.dtype == np.uint8 and np.array_equal(frames, np.round(video * 255).astype(np.uint8))


@pytest.mark.parametrize("damage, message", [
    (dict(actions=np.array([3.7, 0, 1, 2])), "integer ids; found 3.7"),
    (dict(actions=np.eye(4)[IDS % 4] + np.eye(4)[(IDS + 1) % 4]), "not one-hot rows"),
    (dict(actions=np.zeros((4, 2, 2))), r"\(T,\) ids or \(T, K\) one-hot"),
    (dict(video=np.zeros((4, 8, 8), np.uint8)), r"\(T, H, W, 3\) RGB frames"),  # grey
    (dict(video=np.zeros((0, 8, 8, 3), np.uint8), actions=IDS[:0]), "T >= 1"),
    (dict(video=np.full((4, 8, 8, 3), 2.0, np.float32)), r"float in \[0, 1\]"),
    (dict(video=np.zeros((4, 8, 8, 3), np.uint16)), "uint8"),
    (dict(actions=IDS[:3]), "4 frames but 3 actions"),
])
def test_episodes_that_do_not_fit_are_refused_naming_the_file(tmp_path, damage, message):
    path = episode(tmp_path, **damage)
    with pytest.raises(InputError, match=message) as error:
        load_episode(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_bytes(b"not a zip at all"), "cannot be read"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(40)), "cannot be read"),
    (lambda p: np.savez(p, video=np.array([object()], dtype=object), actions=IDS), "Python objects"),
    (lambda p: np.savez(p, frames=np.zeros((4, 8, 8, 3), np.uint8)), r"missing \['actions', 'video'\]"),
])
def test_damaged_episode_files_are_one_line_errors_naming_them(tmp_path, write, message):
    path = tmp_path / "bad.npz"
    write(path)
    with pytest.raises(InputError, match=message) as error:
        load_episode(path)
    assert str(path) in str(error.value)


def test_videos_without_actions_are_named_and_counted(tmp_path, caplog):
    episode(tmp_path)
    (tmp_path / "lonely.mp4").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="nbp"):
        assert [p.name for p in list_episodes(tmp_path)] == ["ep.npz"]
    assert "1 videos in" in caplog.text and "lonely.mp4" in caplog.text
