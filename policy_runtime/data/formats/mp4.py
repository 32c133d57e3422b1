"""Encode, concatenate and decode the mp4 files of video datasets with imageio-ffmpeg's ffmpeg.

The same bundled ffmpeg binary :mod:`policy_runtime.recording.video` records with (no system
ffmpeg, no PyAV). Encoding takes an episode's frames at once (they are in memory: one episode
at a time) and reports ffmpeg's own error text on failure; decoding streams frames, so a file
of many episodes is never in memory whole.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from policy_runtime.data.layout import DatasetFormatError

#: The codecs ``write_lerobot`` offers: LeRobot's default (AV1 by SVT-AV1) and H.264.
CodecName = Literal["libsvtav1", "h264"]
CODEC_ALIASES: dict[str, CodecName] = {
    "libsvtav1": "libsvtav1",
    "av1": "libsvtav1",
    "h264": "h264",
    "libx264": "h264",
}


@dataclass(frozen=True)
class VideoCodec:
    """An encoder and its settings; the defaults are LeRobot's ``RGBEncoderConfig`` defaults
    (``libsvtav1``, ``yuv420p``, GOP 2, CRF 30, preset 12, fast-decode 0)."""

    name: CodecName = "libsvtav1"
    pix_fmt: str = "yuv420p"
    g: int = 2
    crf: int = 30
    fast_decode: int = 0

    @classmethod
    def named(cls, name: str) -> VideoCodec:
        codec = CODEC_ALIASES.get(name.lower())
        if codec is None:
            raise DatasetFormatError(
                f"video codec {name!r} is not supported (choose one of {sorted(CODEC_ALIASES)})"
            )
        return cls(name=codec)

    @property
    def preset(self) -> int | None:
        """LeRobot sets a preset only for libsvtav1 (12); H.264 keeps the encoder's default."""
        return 12 if self.name == "libsvtav1" else None

    @property
    def canonical(self) -> str:
        """The codec's name as a stream reports it (``video.codec`` in LeRobot's info)."""
        return "av1" if self.name == "libsvtav1" else "h264"

    def ffmpeg_args(self) -> list[str]:
        """The output options LeRobot's ``get_codec_options`` gives PyAV, as ffmpeg flags."""
        if self.name == "libsvtav1":
            return [
                "-c:v",
                "libsvtav1",
                "-g",
                str(self.g),
                "-crf",
                str(self.crf),
                "-preset",
                str(self.preset),
                "-svtav1-params",
                f"fast-decode={max(0, min(2, self.fast_decode))}",
            ]
        return ["-c:v", "libx264", "-g", str(self.g), "-crf", str(self.crf)]

    def lerobot_info(self, height: int, width: int, fps: int) -> dict[str, Any]:
        """The ``info`` block LeRobot's ``get_video_info`` writes for a video feature."""
        return {
            "video.height": height,
            "video.width": width,
            "video.codec": self.canonical,
            "video.pix_fmt": self.pix_fmt,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
            "video.g": self.g,
            "video.crf": self.crf,
            "video.preset": self.preset,
            "video.fast_decode": self.fast_decode,
            # The backend LeRobot re-encodes with; "pyav" is the only one it accepts when it
            # rebuilds an encoder config from this block.
            "video.video_backend": "pyav",
            "video.extra_options": {},
            "is_depth_map": False,
        }


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise DatasetFormatError(
            "videos need imageio-ffmpeg (pip install 'policy_runtime[interop]')"
        ) from exc
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _run(command: list[str], what: str, stdin: bytes | None = None) -> None:
    # SVT-AV1 prints its banner to stderr whatever ffmpeg's log level; SVT_LOG=1: errors only.
    env = {**os.environ, "SVT_LOG": "1"}
    result = subprocess.run(command, input=stdin, capture_output=True, env=env, check=False)
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise DatasetFormatError(f"{what}: ffmpeg failed: {' | '.join(tail) or 'no message'}")


def encode_mp4(path: Path, frames: np.ndarray, fps: int, codec: VideoCodec) -> None:
    """Encode ``frames`` ``(T, H, W, 3)`` uint8 RGB at ``fps`` into ``path``."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DatasetFormatError(f"{path.name}: frames must be (T, H, W, 3) uint8")
    _, height, width, _ = frames.shape
    if codec.pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise DatasetFormatError(
            f"{path.name}: {height}x{width} frames cannot be stored as yuv420p (LeRobot's pixel "
            "format needs an even height and width)"
        )
    command = [
        ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        str(fps),
        "-i",
        "-",
        "-an",
        *codec.ffmpeg_args(),
        "-pix_fmt",
        codec.pix_fmt,
        str(path),
    ]
    _run(command, f"encoding {path.name}", np.ascontiguousarray(frames).tobytes())


def concat_mp4(parts: list[Path], out: Path) -> None:
    """Join same-codec mp4 files into ``out`` without re-encoding (ffmpeg's concat demuxer
    with stream copy, as LeRobot's ``concatenate_video_files``); each part starts where the
    previous one ends."""
    listing = out.with_name(out.name + ".ffconcat")
    lines = ["ffconcat version 1.0"] + [f"file '{p.resolve()}'" for p in parts]
    listing.write_text("\n".join(lines) + "\n")
    try:
        command = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0"]
        command += ["-i", str(listing), "-c", "copy", "-movflags", "faststart", str(out)]
        _run(command, f"joining {len(parts)} videos into {out.name}")
    finally:
        listing.unlink(missing_ok=True)


class Mp4Reader:
    """Frames of one mp4 in order, ``(H, W, 3)`` uint8 RGB, decoded as they are asked for."""

    def __init__(self, path: Path, height: int, width: int) -> None:
        if not path.is_file():
            raise DatasetFormatError(f"{path}: video file is missing")
        import imageio_ffmpeg

        self.path, self.height, self.width = path, height, width
        self.position = 0
        self._frames: Generator[Any, Any, None] = imageio_ffmpeg.read_frames(str(path))
        try:
            meta = next(self._frames)
        except (OSError, RuntimeError, StopIteration) as exc:
            raise DatasetFormatError(f"{path}: cannot decode ({exc})") from exc
        size = tuple(meta.get("size", ()))
        if size != (width, height):
            self.close()
            raise DatasetFormatError(
                f"{path}: frames are {size[1] if size else '?'}x{size[0] if size else '?'}, "
                f"the dataset declares {height}x{width}"
            )

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start .. stop - 1`` (``start`` at or after the current position)."""
        if start < self.position:
            raise ValueError(f"{self.path}: frame {start} was already passed")
        frames = np.empty((stop - start, self.height, self.width, 3), np.uint8)
        while self.position < stop:
            try:
                raw = next(self._frames)
            except StopIteration:
                raise DatasetFormatError(
                    f"{self.path}: has {self.position} frames, frame {stop - 1} is needed"
                ) from None
            if self.position >= start:
                frames[self.position - start] = np.frombuffer(raw, np.uint8).reshape(
                    self.height, self.width, 3
                )
            self.position += 1
        return frames

    def close(self) -> None:
        self._frames.close()
