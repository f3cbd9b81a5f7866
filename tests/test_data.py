import errno
import json
import shutil

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nbp.config import UserError
from nbp.data import (
    UCF101_CLASSES,
    TokenDataset,
    VideoDataset,
    class_text,
    collate_clips,
    probe,
    read_frames,
    write_video,
)
from nbp.data.datamodule import DataConfig
from nbp.data.dataset import AnnotationError
from nbp.data.synthetic import CLASSES, make_dataset
from nbp.data.tokens import write_token_dataset
from nbp.data.video import clip_indices


def numbered_frames(count, height=48, width=64, seed=0):
    """Frames that differ from each other: a colour and a bright column that moves with the index."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((count, height, width, 3), np.uint8)
    for i in range(count):
        frames[i] = rng.integers(0, 255, (1, 1, 3))
        frames[i, :, (3 * i) % width] = 255
    return frames


def decode_all(path, size):
    """The reference: every frame decoded in order, scaled like read_frames."""
    with av.open(str(path)) as container:
        return np.stack([f.reformat(width=size, height=size, format="rgb24", interpolation="BILINEAR").to_ndarray()
                         for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = {}
    for ext in ("mp4", "avi"):
        paths[ext] = write_video(root / "Walking" / f"long.{ext}", numbered_frames(60), fps=25, gop=12)
    return root, paths


@pytest.mark.parametrize("ext", ["mp4", "avi"])
@pytest.mark.parametrize("fps, start", [(None, 0), (8, 3), (25, 40), (10, 17), (8, 30), (12.5, 0)])
def test_frame_selection_is_exact(videos, ext, fps, start):
    path = videos[1][ext]
    info = probe(path)
    assert (info.frames, info.fps, info.width, info.height) == (60, 25.0, 64, 48)
    indices = clip_indices(info.frames, info.fps, 9, fps, start)
    step = 1 if fps is None else 25 / fps
    assert indices == [start + int(k * step + 1e-6) for k in range(9)]
    np.testing.assert_array_equal(read_frames(path, indices, 32), decode_all(path, 32)[indices])


def test_dataset_items_shapes_ranges_and_classes(tmp_path):
    for cls in ("Jumping", "Archery"):
        for i in range(2):
            write_video(tmp_path / cls / f"v_{cls}_{i}.mp4", numbered_frames(40, seed=i), fps=20)
    (tmp_path / "list.txt").write_text("Jumping/v_Jumping_0.mp4\t7\nArchery/v_Archery_1.mp4\n\n")
    ds = VideoDataset(tmp_path, tmp_path / "list.txt", sequence_length=9, resolution=32, fps=10, sampling="centre")
    assert ds.classes == ["Archery", "Jumping"] and len(ds) == 2 and ds.skipped == {}
    item = ds[0]
    assert item["video"].shape == (3, 9, 32, 32) and item["video"].dtype == torch.float32
    assert 0 <= item["video"].min() and item["video"].max() <= 1
    assert (item["label"], item["class_name"]) == (1, "Jumping") and item["path"].endswith("v_Jumping_0.mp4")
    # centre window of a 40-frame 20 fps file at 10 fps: span 17, start (40 - 17) // 2 = 11, every 2nd frame
    expected = decode_all(item["path"], 32)[list(range(11, 28, 2))]
    np.testing.assert_array_equal((item["video"].permute(1, 2, 3, 0) * 255).round().byte().numpy(), expected)
    folder = VideoDataset(tmp_path, sequence_length=9, resolution=32)
    assert len(folder) == 4 and folder.classes == ["Archery", "Jumping"]


def test_crop_keeps_aspect_and_squash_does_not(videos):
    path = videos[1]["mp4"]
    squash = read_frames(path, [5], 32, "squash")[0].astype(int)
    crop = read_frames(path, [5], 32, "crop")[0].astype(int)
    assert squash.shape == crop.shape == (32, 32, 3)
    # the bright column sits at x = 15 of 64: squash maps it to ~7.5 of 32, crop (43x32, offset 5) to ~5
    assert abs(int(np.argmax(squash[16, :, 0] + squash[16, :, 1])) - 7) <= 1
    assert abs(int(np.argmax(crop[16, :, 0] + crop[16, :, 1])) - 5) <= 1


def test_short_videos_are_skipped_or_padded(tmp_path):
    write_video(tmp_path / "A" / "short.mp4", numbered_frames(5), fps=25)
    write_video(tmp_path / "A" / "ok.mp4", numbered_frames(30), fps=25)
    skipping = VideoDataset(tmp_path, sequence_length=9, resolution=32)
    assert len(skipping) == 1 and skipping.skipped == {str(tmp_path / "A" / "short.mp4"): "short"}
    padding = VideoDataset(tmp_path, sequence_length=9, resolution=32, short="pad", sampling="centre")
    clip = padding[[e.path.name for e in padding.entries].index("short.mp4")]["video"]
    for t in range(5, 9):
        torch.testing.assert_close(clip[:, t], clip[:, 4], rtol=0, atol=0)


@pytest.fixture
def messy_root(tmp_path):
    good = write_video(tmp_path / "Run" / "good.mp4", numbered_frames(30), fps=25)
    (tmp_path / "Run" / "empty.mp4").write_bytes(b"")
    (tmp_path / "Run" / "notes.avi").write_text("not a video")
    (tmp_path / "Run" / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    data = good.read_bytes()
    (tmp_path / "Run" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    avi = write_video(tmp_path / "Run" / "codec.avi", numbered_frames(30), fps=25).read_bytes()
    (tmp_path / "Run" / "cut.avi").write_bytes(avi[: len(avi) * 7 // 10])  # header intact, later frames missing
    (tmp_path / "Run" / "codec.avi").write_bytes(avi.replace(b"FMP4", b"ZZZZ").replace(b"fmp4", b"zzzz"))
    (tmp_path / "outside.mp4").write_bytes(good.read_bytes())
    (tmp_path / "list.txt").write_text("\n".join(
        ["Run/good.mp4\t1", "Run/empty.mp4\t1", "Run/notes.avi\t1", "Run/noise.mp4\t1", "Run/truncated.mp4\t1",
         "Run/codec.avi\t1", "Run/cut.avi\t1", "Run/absent.mp4\t1", "../outside.mp4\t1"]) + "\n")
    return tmp_path


def test_bad_files_are_skipped_and_counted(messy_root, caplog):
    ds = VideoDataset(messy_root, messy_root / "list.txt", sequence_length=9, resolution=32, sampling="centre",
                      on_error="skip")
    for index in range(len(ds)):
        ds[index]
    reasons = {path.rsplit("/", 1)[-1]: reason for path, reason in ds.skipped.items()}
    assert reasons.pop("absent.mp4") == "missing"
    assert reasons.pop("outside.mp4") == "outside-root"
    assert reasons == {"empty.mp4": "unreadable", "notes.avi": "unreadable", "noise.mp4": "unreadable",
                       "truncated.mp4": "unreadable", "codec.avi": "codec", "cut.avi": "truncated"}
    assert [e.path.name for e in ds.entries if str(e.path) not in ds.skipped] == ["good.mp4"]
    assert sum(ds.skip_counts().values()) == 8
    assert "left out" in caplog.text


def test_decode_failures_are_replaced_or_dropped(messy_root):
    replacing = VideoDataset(messy_root, messy_root / "list.txt", sequence_length=9, resolution=32, sampling="centre")
    assert all(replacing[i]["path"].endswith("good.mp4") for i in range(len(replacing)))
    skipping = VideoDataset(messy_root, messy_root / "list.txt", sequence_length=9, resolution=32, sampling="centre",
                            on_error="skip")
    batch = collate_clips([skipping[i] for i in range(len(skipping))])
    assert batch["video"].shape[0] == 1 and batch["dropped"] == len(skipping) - 1


def test_nothing_usable_is_a_clear_error(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "x.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="no usable video .* skipped: \\{'unreadable': 1\\}"):
        VideoDataset(tmp_path, sequence_length=9)


def test_malformed_annotation_names_file_and_line(tmp_path):
    (tmp_path / "list.txt").write_text("A/x.mp4\t1\nA/y.mp4\tone\n")
    with pytest.raises(AnnotationError, match="list.txt:2: expected"):
        VideoDataset(tmp_path, tmp_path / "list.txt")


def test_ucf101_classes_and_text():
    assert len(UCF101_CLASSES) == 101 and len(set(UCF101_CLASSES)) == 101
    assert UCF101_CLASSES[:3] == ("ApplyEyeMakeup", "ApplyLipstick", "Archery") and UCF101_CLASSES[-1] == "YoYo"
    assert UCF101_CLASSES.index("Hammering") == 34 and UCF101_CLASSES.index("HammerThrow") == 35  # classInd 35, 36
    assert UCF101_CLASSES.index("JumpingJack") == 46 and UCF101_CLASSES.index("JumpRope") == 47
    assert class_text("ApplyEyeMakeup") == "apply eye makeup" and class_text("YoYo") == "yo yo"


def test_synthetic_dataset_is_deterministic_and_laid_out_like_ucf(tmp_path):
    a = make_dataset(tmp_path / "a", videos_per_class=4, size=32, seed=3)
    b = make_dataset(tmp_path / "b", videos_per_class=4, size=32, seed=3)
    train = (a / "trainlist.txt").read_text().splitlines()
    assert len(train) == 12 and train[0] == "BarRotating/v_BarRotating_g01_c02.mp4\t1"
    assert (a / "testlist.txt").read_text().splitlines()[-1] == "SquareMovingDown/v_SquareMovingDown_g01_c01.mp4\t4"
    for line in train[:3]:
        relative = line.split("\t")[0]
        np.testing.assert_array_equal(decode_all(a / relative, 32), decode_all(b / relative, 32))
    ds = VideoDataset(a, a / "trainlist.txt", sequence_length=9, resolution=32)
    assert ds.classes == list(CLASSES) and len(ds) == 12


def fake_shard(clips: range):
    tokens = np.stack([np.full(6, 60000 + i) for i in clips]).astype(np.uint16)
    return tokens, np.array([i % 3 for i in clips]), [f"clip{i}" for i in clips]


def test_token_dataset_round_trip_and_resume(tmp_path):
    meta = {"vocab_size": 64000, "latent_shape": [1, 2, 3], "classes": ["a", "b", "c"]}
    calls = []

    def failing_at_third(clips):
        calls.append(clips.start)
        if clips.start == 8:
            raise KeyboardInterrupt
        return fake_shard(clips)

    with pytest.raises(KeyboardInterrupt):
        write_token_dataset(tmp_path / "tok", meta, 10, 4, failing_at_third)
    assert sorted(p.name for p in (tmp_path / "tok").glob("*.paths.json")) == ["shard_00000.paths.json", "shard_00001.paths.json"]
    assert not list((tmp_path / "tok").glob("*.tmp"))
    counts = write_token_dataset(tmp_path / "tok", meta, 10, 4, lambda clips: (calls.append(clips.start), fake_shard(clips))[1])
    assert counts == {"written": 1, "kept": 2, "clips": 10} and calls == [0, 4, 8, 8]
    ds = TokenDataset(tmp_path / "tok")
    assert len(ds) == 10 and ds.latent_shape == (1, 2, 3) and ds.vocab_size == 64000
    item = ds[9]
    assert item["tokens"].dtype == torch.int64 and item["tokens"].tolist() == [60009] * 6 and item["label"] == 0
    assert (tmp_path / "tok" / "shard_00000.tokens.npy").stat().st_size == 128 + 4 * 6 * 2  # npy header + uint16
    with pytest.raises(ValueError, match="other settings \\(\\['vocab_size'\\]\\)"):
        write_token_dataset(tmp_path / "tok", {**meta, "vocab_size": 1000}, 10, 4, fake_shard)


def test_a_full_disk_while_tokenizing_keeps_the_finished_shards(tmp_path, monkeypatch):
    meta = {"vocab_size": 64000, "latent_shape": [1, 2, 3], "classes": ["a", "b", "c"]}
    real_save, saves = np.save, []

    def disk_fills_at_the_third_array(file, array, *args, **kwargs):
        saves.append(1)
        if len(saves) == 3:  # the second shard's tokens: a few bytes land, then the disk is full
            file.write(b"\x93NUMPY")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", disk_fills_at_the_third_array)
    with pytest.raises(UserError, match="could not write shard_00001 in .*No space left on device.*the 1 shards "
                                        "before it are complete and kept: free space"):
        write_token_dataset(tmp_path / "tok", meta, 10, 4, fake_shard)
    folder = tmp_path / "tok"
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "shard_00000.labels.npy",
                                                        "shard_00000.paths.json", "shard_00000.tokens.npy"]
    monkeypatch.setattr(np, "save", real_save)
    assert write_token_dataset(folder, meta, 10, 4, fake_shard) == {"written": 2, "kept": 1, "clips": 10}
    np.testing.assert_array_equal(TokenDataset(folder)[4]["tokens"].numpy(), [60004] * 6)


def test_tokenize_command_stores_the_tokenizer_codes(tmp_path):
    from nbp.checkpoint import save_model
    from nbp.cli import main
    from nbp.config import from_preset
    from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer

    root = make_dataset(tmp_path / "synth", videos_per_class=3, size=32, seed=1)
    torch.manual_seed(0)
    tokenizer = VideoTokenizer(from_preset(TokenizerConfig, "tiny", resolution=32)).eval()
    save_model(tokenizer, tmp_path / "tok.safetensors")
    args = [f"tokenizer={tmp_path / 'tok.safetensors'}", f"clips.root={root}", f"out={tmp_path / 'tokens'}",
            "clips.annotations=trainlist.txt", "clips.frames=9", "clips.resolution=32", "shard_size=4",
            "num_workers=0"]
    assert main(["tokenize", *args]) == 0
    tokens = TokenDataset(tmp_path / "tokens")
    clips = VideoDataset(root, root / "trainlist.txt", sequence_length=9, resolution=32, sampling="centre")
    assert len(tokens) == len(clips) == 8 and tokens.latent_shape == (3, 4, 4) and tokens.classes == list(CLASSES)
    for index in (0, 5):
        with torch.no_grad():
            _, expected = tokenizer.encode(clips[index]["video"][None])
        assert tokens[index]["tokens"].tolist() == expected.flatten().tolist()
        assert tokens[index]["label"] == clips[index]["label"]
    shutil.rmtree(tmp_path / "tokens" / "shard_00001.paths.json", ignore_errors=True)
    (tmp_path / "tokens" / "shard_00001.paths.json").unlink()
    assert main(["tokenize", *args]) == 0  # resumes: rewrites only the incomplete shard
    assert len(TokenDataset(tmp_path / "tokens")) == 8
    assert json.loads((tmp_path / "tokens" / "meta.json").read_text())["clip"]["sequence_length"] == 9

    assert main(["tokenize", *args, f"out={tmp_path / 'windows'}", "windows=3"]) == 0
    windows = TokenDataset(tmp_path / "windows")
    assert len(windows) == 3 * len(clips)
    first = clips.infos[1]
    free = first.frames - 9
    for k, start in enumerate([0, round(free / 2), free]):  # video 1's windows: its start, middle and end
        video = clips.load_clip(1, k / 2)["video"]
        assert clips.window_start(first, k / 2) == start
        with torch.no_grad():
            _, expected = tokenizer.encode(video[None])
        assert windows[3 + k]["tokens"].tolist() == expected.flatten().tolist()


def test_the_data_config_serves_random_training_and_centre_validation_windows(tmp_path):
    root = make_dataset(tmp_path / "synth", videos_per_class=4, size=32, seed=2)
    cfg = DataConfig(root=str(root), frames=9, resolution=32, batch_size=3, num_workers=0)
    train, val = cfg.dataset(cfg.train, training=True), cfg.dataset(cfg.val, training=False)
    batch = next(iter(DataLoader(train, batch_size=cfg.batch_size)))
    assert batch["video"].shape == (3, 3, 9, 32, 32) and batch["label"].shape == (3,)
    assert train.sampling == "random" and len(val) == 4 and val.sampling == "centre"


def test_the_official_spelling_center_is_accepted(tmp_path):
    root = make_dataset(tmp_path / "synth", videos_per_class=1, size=32, seed=3)
    centre, center = (VideoDataset(root, sequence_length=9, resolution=32, sampling=s) for s in ("centre", "center"))
    assert center.sampling == "centre" and torch.equal(center[1]["video"], centre[1]["video"])


@pytest.mark.parametrize("damage, message", [
    (lambda t, y: (t.astype(np.int32), y), "not uint16"), (lambda t, y: (t[:, :5], y), "not \\(n, 6\\)"),
    (lambda t, y: (t + 100, y), "token 1[0-9][0-9] outside the vocabulary of 100"),
    (lambda t, y: (t, y[:-1]), "3 labels for 4 clips"),
])
def test_damaged_token_shards_are_refused_when_opened(tmp_path, damage, message):
    meta = {"vocab_size": 100, "latent_shape": [1, 2, 3], "classes": ["a", "b"]}
    tokens, labels = np.arange(24, dtype=np.uint16).reshape(4, 6), np.array([0, 1, 0, 1], np.int32)
    write_token_dataset(tmp_path / "tok", meta, 4, 4, lambda clips: (tokens, labels, [""] * 4))
    bad_tokens, bad_labels = damage(tokens, labels)
    np.save(tmp_path / "tok" / "shard_00000.tokens.npy", bad_tokens)  # damaged on disk after it was written
    np.save(tmp_path / "tok" / "shard_00000.labels.npy", bad_labels)
    with pytest.raises(ValueError, match=message):
        TokenDataset(tmp_path / "tok")


def test_odd_files_are_counted_not_lost(tmp_path):
    """A byte-order mark keeps its first entry, a symlink loop and a dangling link are skipped with a reason."""
    for i in range(2):
        write_video(tmp_path / "Jumping" / f"v_{i}.mp4", numbered_frames(12, seed=i), fps=8)
    (tmp_path / "Jumping" / "loop.mp4").symlink_to(tmp_path / "Jumping" / "loop.mp4")
    (tmp_path / "Jumping" / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (tmp_path / "list.txt").write_text("Jumping/v_0.mp4\nJumping/loop.mp4\nJumping/v_1.mp4\n", encoding="utf-8-sig")
    listed = VideoDataset(tmp_path, tmp_path / "list.txt", sequence_length=9, resolution=32)
    assert len(listed) == 2 and set(listed.skipped.values()) == {"link-loop"}
    scanned = VideoDataset(tmp_path, sequence_length=9, resolution=32)
    assert len(scanned) == 2 and scanned.skip_counts() == {"dangling-link": 2}  # the loop is dangling to a scan
