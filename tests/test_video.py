"""Tests for cyclegan_tf.video and videos in `translate`: small videos with audio made by PyAV here
(the stand-in for a video made elsewhere), translated by a tiny float32 run and its exports."""

import fractions
import os
import sys

import fixtures
import numpy as np
import PIL.Image
import pytest

from cyclegan_tf import sources, translate, video

av = pytest.importorskip("av", reason='needs PyAV: pip install "cyclegan-tf[video]"')

# name -> (width, height, encoder, pixel format, audio encoder); 35x27 and 33x25 are odd sizes.
VIDEOS = {
    "clip.mp4": (32, 32, "libx264", "yuv420p", "aac"),
    "odd.mkv": (35, 27, "ffv1", "bgr0", "flac"),  # lossless, so translations compare exactly
    "odd264.mov": (35, 27, "libx264", "yuv444p", "aac"),
    "web.webm": (33, 25, "libvpx-vp9", "yuv420p", "libopus"),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    run_dir = str(root / "run")
    fixtures.make_run(run_dir)
    inputs = root / "inputs"
    inputs.mkdir()
    for name, (width, height, codec, pix_fmt, audio) in VIDEOS.items():
        fixtures.make_video(inputs / name, width, height, codec=codec, pix_fmt=pix_fmt, audio=audio)
    fixtures.make_gif(inputs / "anim.gif", 33, 23)
    PIL.Image.fromarray(fixtures.random_image(12, 9, seed=6)).save(inputs / "still.gif")
    PIL.Image.fromarray(fixtures.random_image(20, 30, seed=2)).save(inputs / "photo.png")
    loaded = sources.load(run_dir, "a2b", precision="float32")
    return {"root": root, "run_dir": run_dir, "inputs": str(inputs), "loaded": loaded}


def _decode(path):
    """(RGB frames [N, H, W, 3], their pts, the video stream's average rate and time base)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        rgb = np.stack(
            [f.to_ndarray(format="rgb24", src_color_range=f.color_range or None) for f in frames]
        )
        return rgb, [f.pts for f in frames], stream.average_rate, stream.time_base


def _audio_packets(path):
    with av.open(str(path)) as container:
        return [
            (bytes(p), p.pts, p.duration) for p in container.demux(audio=0) if p.dts is not None
        ]


def _per_frame(loaded, frames):
    """Every frame translated alone, as `translate` does an image: the reference."""
    return np.stack([loaded(frame[np.newaxis])[0] for frame in frames])


def _through_pixel_format(frames, pix_fmt):
    """RGB frames converted to `pix_fmt` and back, as the encoder's input is (no codec)."""
    return np.stack(
        [
            av.VideoFrame.from_ndarray(frame, format="rgb24")
            .reformat(format=pix_fmt)
            .to_ndarray(format="rgb24")
            for frame in frames
        ]
    )


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_videos_are_found_and_keep_their_names(setup):
    inputs = setup["inputs"]
    found = [os.path.basename(p) for p in translate.find_images(inputs)]
    assert found == sorted([*VIDEOS, "anim.gif", "still.gif", "photo.png"])
    assert video.is_video_file(os.path.join(inputs, "anim.gif"))
    assert not video.is_video_file(os.path.join(inputs, "still.gif"))  # one frame: an image
    files = [os.path.join(inputs, n) for n in ("clip.mp4", "anim.gif", "still.gif")]
    videos = {p for p in files if video.is_video_file(p)}
    assert translate.output_names(files, "out", videos) == [
        "out/clip.mp4",
        "out/anim.gif",
        "out/still.png",
    ]


def test_translate_video_feeds_the_encoder_the_per_frame_translation(setup, tmp_path):
    loaded, seen = setup["loaded"], []

    def recording(frames):
        translated = loaded(frames)
        seen.append((frames.copy(), translated.copy()))
        return translated

    source = os.path.join(setup["inputs"], "odd.mkv")
    summary = video.translate_video(source, str(tmp_path / "odd.mkv"), recording, batch_frames=3)
    assert (summary.frames, summary.width, summary.height) == (8, 35, 27)
    assert [len(given) for given, _ in seen] == [3, 3, 2]  # batches of 3, the rest
    given = np.concatenate([g for g, _ in seen])
    fed = np.concatenate([t for _, t in seen])
    decoded, _, _, _ = _decode(source)
    np.testing.assert_array_equal(given, decoded)  # the frames as PyAV decodes them
    # Batched vs one frame at a time: the same float32 ops on the same pixels, but the
    # convolutions may sum in another order for another batch size (oneDNN picks kernels by
    # shape); a float32 difference of ~1e-6 moves a value across a rounding boundary at most
    # once, i.e. by one uint8 level. Measured here: identical.
    difference = np.abs(fed.astype(int) - _per_frame(loaded, decoded).astype(int))
    assert difference.max() <= 1, difference.max()
    # FFV1 in bgr0 is lossless: the file holds exactly the frames fed to the encoder.
    written, _, _, _ = _decode(tmp_path / "odd.mkv")
    np.testing.assert_array_equal(written, fed)


def test_translate_keeps_frames_rate_size_and_audio(setup, tmp_path, capsys):
    out = str(tmp_path / "out")
    summary = sources.load(setup["run_dir"], precision="float32").translate_files(
        setup["inputs"], out, verbose=True
    )
    assert not summary.failed
    names = sorted(os.listdir(out))
    assert names == sorted([*VIDEOS, "anim.gif", "still.png", "photo.png"])
    captured = capsys.readouterr().out
    assert "clip.mp4: 8 frames 32x32 at 12 fps" in captured and "frames/s" in captured
    assert "Translated 7 of 7 files (5 videos) (a2b)" in captured
    loaded = setup["loaded"]
    for name, (width, height, codec, pix_fmt, _) in VIDEOS.items():
        source, target = os.path.join(setup["inputs"], name), os.path.join(out, name)
        frames, pts, rate, time_base = _decode(source)
        got, got_pts, got_rate, got_time_base = _decode(target)
        assert got.shape == frames.shape == (8, height, width, 3), name
        assert (got_pts, got_rate) == (pts, rate), name
        assert got_time_base == time_base, name
        assert _audio_packets(target) == _audio_packets(source), name  # copied, not re-encoded
        with av.open(target) as container:  # the input's codec kept
            written = container.streams.video[0].codec_context.name
            assert written == {"libx264": "h264", "libvpx-vp9": "vp9"}.get(codec, codec), name
        want = _per_frame(loaded, frames)
        if codec == "ffv1":  # lossless; batched vs per frame: one level at most (see above)
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name
            continue
        # Lossy: what the pixel format keeps of the translation (4:2:0 halves the colour
        # resolution), then the codec's quantisation at high quality (x264 CRF 18, VP9 CRF 24)
        # of the tiny random model's busy, noise-like output, the worst case for a codec:
        # measured 29.7-35.6 dB per frame (x264 4:4:4 lowest), against ~17-21 dB between a
        # written frame and the translation of another frame. So: above 26 dB (~13 levels RMS)
        # and 5 dB closer to its own frame than to any other.
        want = _through_pixel_format(want, pix_fmt)
        for i in range(len(got)):
            own = _psnr(got[i], want[i])
            others = max(_psnr(got[i], want[j]) for j in range(len(want)) if j != i)
            assert own > 26 and own > others + 5, (name, i, own, others)
    # The animated GIF: at most 256 colours per frame, so exact only where the translation has
    # few colours; its timing (1/100 s) and the last frame's duration are kept exactly.
    frames, pts, _, _ = _decode(os.path.join(setup["inputs"], "anim.gif"))
    got, got_pts, _, _ = _decode(os.path.join(out, "anim.gif"))
    assert got.shape == frames.shape and got_pts == pts
    with PIL.Image.open(os.path.join(out, "anim.gif")) as gif:
        durations = [(gif.seek(i), gif.info["duration"])[1] for i in range(gif.n_frames)]
    assert durations == [80, 80, 120, 40]
    want = _per_frame(loaded, frames)
    for i in range(len(got)):  # a 256-colour median cut of each frame; another frame: ~20 dB
        assert _psnr(got[i], want[i]) > 30, (i, _psnr(got[i], want[i]))


def test_a_damaged_video_is_skipped_in_one_line(setup, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    with open(os.path.join(setup["inputs"], "clip.mp4"), "rb") as f:
        (inputs / "cut.mp4").write_bytes(f.read()[:2000])  # the index (moov) is lost
    (inputs / "junk.webm").write_bytes(b"not a video at all")
    PIL.Image.fromarray(fixtures.random_image(20, 30, seed=2)).save(inputs / "photo.png")
    out = tmp_path / "out"
    summary = sources.load(setup["run_dir"], precision="float32").translate_files(
        str(inputs), str(out)
    )
    assert sorted(os.listdir(out)) == ["photo.png"]  # no partial or temporary file left
    assert sorted(os.path.basename(p) for p, _ in summary.failed) == ["cut.mp4", "junk.webm"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("cyclegan-tf: skipped") for line in err), err
    assert all("Invalid data" in line for line in err), err


def test_without_pyav_videos_are_one_line_and_images_still_work(
    setup, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    out = tmp_path / "out"
    files = os.path.join(setup["inputs"], "*.*")
    summary = sources.load(setup["run_dir"], precision="float32").translate_files(files, str(out))
    assert sorted(os.listdir(out)) == ["photo.png", "still.png"]
    assert len(summary.failed) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all('pip install "cyclegan-tf[video]"' in line for line in err)
    with pytest.raises(video.MissingVideoExtraError, match=r'pip install "cyclegan-tf\[video\]"'):
        sources.load(setup["run_dir"]).translate_files(
            os.path.join(setup["inputs"], "clip.mp4"), str(out)
        )


@pytest.mark.parametrize("name", ["wide.mp4", "wide.mkv"])
def test_the_pixel_aspect_ratio_is_kept(tmp_path, name):
    # An anamorphic video: 24x16 pixels of shape 8:9, shown at 4:3. Without the ratio in the
    # output a player shows it 3:2.
    source, target = tmp_path / name, tmp_path / f"out_{name}"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 24, 16, "yuv420p"
        stream.codec_context.sample_aspect_ratio = fractions.Fraction(8, 9)
        for i, image in enumerate(fixtures.random_image(16, 24, seed=s) for s in range(3)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    video.translate_video(str(source), str(target), lambda frames: 255 - frames)
    for path in (source, target):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.sample_aspect_ratio == fractions.Fraction(8, 9), path
            assert stream.display_aspect_ratio == fractions.Fraction(4, 3), path
