"""rosbag2 reading and writing through ``rosbags`` (no ROS installation needed).

Messages are kept as CDR bytes: rclpy's ``serialize_message``/``deserialize_message`` and the
bag use the same encoding, so a message goes from a bag to a topic and back without conversion.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
BAG_VERSION: Literal[9] = 9  # rosbag2 metadata version written by Jazzy and later


class BagError(RuntimeError):
    """A bag cannot be read or written; the message names the path and the problem."""


class Storage(str, Enum):
    MCAP = 'mcap'  # default storage from ROS 2 Iron on
    SQLITE3 = 'sqlite3'  # Humble's default

    @property
    def plugin(self) -> StoragePlugin:
        return StoragePlugin.MCAP if self is Storage.MCAP else StoragePlugin.SQLITE3


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str  # e.g. 'geometry_msgs/msg/PoseStamped'
    log_time_ns: int  # when the recorder received it (bag time), not its header stamp
    data: bytes  # CDR


def read_messages(path: str | Path, topics: Sequence[str] | None = None) -> Iterator[BagMessage]:
    """Messages of ``topics`` (all if None) in bag-time order; a missing topic is an error."""
    path = Path(path)
    if not path.exists():
        raise BagError(f'bag not found: {path}')
    try:
        with Reader(path) as reader:
            available = {c.topic: c.msgtype for c in reader.connections}
            missing = sorted(set(topics or ()) - set(available))
            if missing:
                raise BagError(f'bag {path} has no topic(s) {missing}; its topics: {available}')
            connections = [c for c in reader.connections if topics is None or c.topic in topics]
            for connection, timestamp, data in reader.messages(connections=connections):
                yield BagMessage(connection.topic, connection.msgtype, timestamp, bytes(data))
    except BagError:
        raise
    except Exception as err:  # rosbags raises several reader errors; the path is what the user needs
        raise BagError(f'cannot read bag {path}: {err}') from None


class BagWriter:
    """Write CDR messages to a new rosbag2; refuses to overwrite an existing path."""

    def __init__(self, path: str | Path, *, storage: Storage = Storage.MCAP):
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f'refusing to overwrite {self.path}: choose another output path or delete it')
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=storage.plugin)
        self._connections: dict[str, object] = {}

    def open(self) -> BagWriter:
        self._writer.open()
        return self

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, topic: str, msgtype: str, log_time_ns: int, data: bytes) -> None:
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            self._connections[topic] = connection
        self._writer.write(connection, log_time_ns, data)  # type: ignore[arg-type]
