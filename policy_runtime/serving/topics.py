"""A topic's messages to the stamped arrays of the observation keys mapped to it.

One reader per topic serves every consumer: the policy server's subscriptions, the recorder's,
and the rosbag2 import. Messages are read by attribute only (``header.stamp``, ``name``,
``position``, ``pose``, ``encoding``, ``data``...), so an rclpy message and a ``rosbags``
message decode through the same code, and nothing here imports ROS. Decoding is deferred: each
key gets a function that makes its array (and raises :class:`DecodeError`), so a consumer
decodes only what it keeps (the recorder decodes one camera frame per grid time, not every
frame).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from policy_runtime.serving.config import ObservationSource
from policy_runtime.serving.decode import DecodeError, NamePicker, fit_image, pose_observation

#: Makes one key's array from a message (raises DecodeError).
Decoder = Callable[[], np.ndarray]


def message_stamp(msg: Any) -> float:
    """``header.stamp`` in seconds."""
    stamp = msg.header.stamp
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def image_pixels(msg: Any) -> np.ndarray:
    """An rgb8 or bgr8 image as (H, W, 3) uint8 RGB (a view of the message's data where the
    layout allows)."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise DecodeError(f"image encoding {msg.encoding!r}; rgb8 or bgr8 expected")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if step < 3 * width or data.size < step * height:
        raise DecodeError(f"image data of {data.size} bytes for {width}x{height}")
    pixels = data[: step * height].reshape(height, step)[:, : 3 * width]
    pixels = pixels.reshape(height, width, 3)
    return pixels[..., ::-1] if msg.encoding == "bgr8" else pixels


class TopicReader:
    """The keys read from one topic (all of one source type) and how each decodes.

    ``shapes`` gives image keys their (H, W, 3): each frame is centre-cropped and resized to it
    (:func:`~policy_runtime.serving.decode.fit_image`).
    """

    def __init__(
        self,
        topic: str,
        sources: Mapping[str, ObservationSource],
        shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        kinds = {source.type for source in sources.values()}
        if len(kinds) != 1:
            raise ValueError(f"topic {topic} is read as {sorted(kinds)}: one type per topic")
        self.topic = topic
        self.kind = kinds.pop()
        self.keys = list(sources)
        self._pickers = {
            key: (NamePicker(s.names, s.name_prefix), s.field)
            for key, s in sources.items()
            if s.type == "joint_state"
        }
        self._shapes = dict(shapes or {})
        missing = [k for k in self.keys if self.kind == "image" and k not in self._shapes]
        if missing:
            raise ValueError(f"topic {topic}: image key(s) {missing} need a shape")

    def read(self, msg: Any) -> list[tuple[str, Decoder]]:
        """Each key's decoder for ``msg`` (one for every key of the topic)."""
        if self.kind == "joint_state":
            return [
                (key, _bind(pick, msg.name, getattr(msg, field)))
                for key, (pick, field) in self._pickers.items()
            ]
        if self.kind == "pose":
            p, o = msg.pose.position, msg.pose.orientation
            decode = _bind(pose_observation, (p.x, p.y, p.z), (o.x, o.y, o.z, o.w))
            return [(key, decode) for key in self.keys]
        return [(key, _image_decoder(msg, self._shapes[key])) for key in self.keys]


def readers(
    sources: Mapping[str, ObservationSource], shapes: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, TopicReader]:
    """One reader per topic of ``sources``; ValueError for a topic read as two types."""
    by_topic: dict[str, dict[str, ObservationSource]] = {}
    for key, source in sources.items():
        by_topic.setdefault(source.topic, {})[key] = source
    return {topic: TopicReader(topic, group, shapes) for topic, group in by_topic.items()}


def _bind(function: Callable[..., np.ndarray], *args: object) -> Decoder:
    return lambda: function(*args)


def _image_decoder(msg: Any, shape: tuple[int, ...]) -> Decoder:
    def decode() -> np.ndarray:
        return fit_image(image_pixels(msg), shape)

    return decode
