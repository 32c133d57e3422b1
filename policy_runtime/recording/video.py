"""An episode's camera stream as an mp4 (every frame, full size) beside the dataset.

The dataset holds one frame per grid time at the policy's size; the video keeps what the camera
saw, for review and for re-cutting the data at another size or rate later (Diffusion Policy's
real-robot recordings keep videos for the same reason). Frames go to an ffmpeg process
(imageio-ffmpeg's bundled binary, H.264 ``ultrafast``) as they come, so memory holds none; the
file is written as ``<name>.mp4.partial`` and renamed when the episode is saved, and each
frame's stamp goes to ``<name>_stamps.npy`` (the mp4's own times assume a constant rate).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np


class VideoWriter:
    """One camera's frames of one episode to ``path`` (see the module docs)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.partial = path.with_name(path.name + ".partial")
        self.stamps: list[float] = []
        self._writer: Generator[Any, Any, None] | None = None
        self._shape: tuple[int, ...] | None = None

    def write(self, stamp: float, pixels: np.ndarray) -> None:
        """Append an (H, W, 3) uint8 RGB frame; frames of another size are skipped."""
        if self._writer is None:
            import imageio_ffmpeg

            self.partial.parent.mkdir(parents=True, exist_ok=True)
            height, width = pixels.shape[:2]
            self._shape = pixels.shape
            self._writer = imageio_ffmpeg.write_frames(
                str(self.partial),
                (width, height),
                fps=self.fps,
                codec="libx264",
                pix_fmt_in="rgb24",
                output_params=["-preset", "ultrafast", "-f", "mp4"],
                macro_block_size=1,
                ffmpeg_log_level="error",
            )
            self._writer.send(None)
        if pixels.shape != self._shape:
            return
        self._writer.send(np.ascontiguousarray(pixels))
        self.stamps.append(stamp)

    def close(self) -> str | None:
        """Finish the file and put it in place; what went wrong instead (the file is then
        removed: imageio-ffmpeg does not check ffmpeg's exit, so a file without its index, the
        ``moov`` box ffmpeg writes last, is how a failed encode shows)."""
        if self._writer is None:
            return None
        try:
            self._writer.close()
        except (OSError, RuntimeError) as exc:
            self.abort()
            return f"{self.path.name}: {exc}"
        self._writer = None
        if not _finished(self.partial):
            self.abort()
            return f"{self.path.name}: ffmpeg did not finish the file (a full disk?)"
        np.save(self.path.with_name(self.path.stem + "_stamps.npy"), np.asarray(self.stamps))
        self.partial.rename(self.path)
        return None

    def abort(self) -> None:
        """Stop and delete the file (the episode was discarded)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.partial.unlink(missing_ok=True)


def _finished(path: Path, tail_bytes: int = 8 << 20) -> bool:
    """Whether the mp4 at ``path`` ends with its ``moov`` box (its last few MB hold it)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            file.seek(max(0, size - tail_bytes))
            return b"moov" in file.read()
    except OSError:
        return False
