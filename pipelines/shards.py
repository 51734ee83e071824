"""Shards: the unit of progress that a resumed run can trust.

A run processes its input files in shards (consecutive files grouped up to a size),
each shard one streaming execution writing into its own folder, then a small marker
file that says the shard is complete and how many rows went in and out. A run that is
interrupted and resumed skips every shard with a marker and wipes the folder of any
shard without one before redoing it, so no row is ever written twice. Object stores
have no atomic rename; a marker written after the data is the commit point.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Optional

import pyarrow.fs as pafs

from routing.core.storage import exists, filesystem_and_path, join, read_bytes, write_bytes

SHARD_MARKERS = "_shards"
RUN_FILE = "_run.json"


@dataclass(frozen=True)
class Shard:
    index: int
    paths: tuple[str, ...]

    @property
    def id(self) -> str:
        digest = hashlib.sha256("\n".join(self.paths).encode()).hexdigest()[:10]
        return f"shard-{self.index:05d}-{digest}"


def plan_shards(fs: pafs.FileSystem, paths: list[str], target_bytes: int) -> list[Shard]:
    """Group files in order until a group reaches `target_bytes`. The grouping only
    depends on the file list and sizes, so a resumed run finds the same shards."""
    infos = fs.get_file_info(paths)
    shards: list[Shard] = []
    group: list[str] = []
    size = 0
    for path, info in zip(paths, infos):
        group.append(path)
        size += max(info.size or 0, 0)
        if size >= target_bytes:
            shards.append(Shard(len(shards), tuple(group)))
            group, size = [], 0
    if group:
        shards.append(Shard(len(shards), tuple(group)))
    return shards


def shard_dir(output: str, shard: Shard) -> str:
    return join(output, shard.id)


def marker_path(output: str, shard: Shard) -> str:
    return join(output, SHARD_MARKERS, f"{shard.id}.json")


def read_marker(output: str, shard: Shard) -> Optional[dict]:
    path = marker_path(output, shard)
    return json.loads(read_bytes(path)) if exists(path) else None


def write_marker(output: str, shard: Shard, record: dict) -> None:
    write_bytes(marker_path(output, shard), json.dumps({"shard": shard.id, "files": list(shard.paths), **record}, indent=2).encode())


def clear_dir(uri: str) -> None:
    fs, path = filesystem_and_path(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir_contents(path, missing_dir_ok=True)


def read_run_record(output: str) -> Optional[dict]:
    path = join(output, RUN_FILE)
    return json.loads(read_bytes(path)) if exists(path) else None


def write_run_record(output: str, record: dict) -> None:
    write_bytes(join(output, RUN_FILE), json.dumps(record, indent=2).encode())
