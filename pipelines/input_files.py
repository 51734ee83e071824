"""Resolve the config's input path (file, directory, glob; local or s3://) to files.

Done in the driver before anything runs, so that "no input files" or a typo in a glob
is a one-line error at second zero, not an empty output after a cluster spun up.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from routing.core.config import ConfigError, InputSpec
from routing.core.storage import filesystem_and_path, is_s3

EXTENSIONS = {"parquet": (".parquet", ".pq"), "jsonl": (".jsonl", ".json", ".jsonl.gz"), "squad": (".json",)}
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputFiles:
    filesystem: pafs.FileSystem
    paths: list[str]  # paths within the filesystem (bucket/key for S3)
    uri_prefix: str  # "s3://" or ""

    def uri(self, path: str) -> str:
        return f"{self.uri_prefix}{path}"


def _hidden(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.startswith((".", "_"))


def resolve_input(spec: InputSpec) -> InputFiles:
    fs, path = filesystem_and_path(spec.path)
    prefix = "s3://" if is_s3(spec.path) else ""
    try:
        if any(ch in path for ch in _GLOB_CHARS):
            base = path
            while any(ch in base for ch in _GLOB_CHARS):
                base = base.rsplit("/", 1)[0]
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            paths = [i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise ConfigError(f"input.path: {spec.path} does not exist; check the path or your S3 credentials")
            if info.type == pafs.FileType.File:
                paths = [path]
            else:
                infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
                exts = EXTENSIONS[spec.format]
                paths = [i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(exts)]
    except OSError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"input.path: cannot list {spec.path} ({reason}); check the path and that these credentials may read it") from None
    paths = sorted(p for p in paths if not _hidden(p))
    if not paths:
        raise ConfigError(
            f"input.path: no {spec.format} files found at {spec.path}; expected files ending in {'/'.join(EXTENSIONS[spec.format])}"
        )
    return InputFiles(filesystem=fs, paths=paths, uri_prefix=prefix)


def parquet_row_counts(files: InputFiles, columns: list[str]) -> tuple[dict[str, int], dict[str, str]]:
    """Rows per readable Parquet file from the footers alone, and the unreadable ones
    with the reason (a truncated file has no valid footer, a file without the mapped
    columns cannot be answered)."""
    counts: dict[str, int] = {}
    bad: dict[str, str] = {}
    for path in files.paths:
        try:
            with files.filesystem.open_input_file(path) as fh:
                meta = pq.ParquetFile(fh)
                names = set(meta.schema_arrow.names)
                rows = meta.metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - any failure to read a footer means unreadable
            bad[path] = f"not a readable Parquet file: {type(exc).__name__}: {exc}"
            continue
        missing = [c for c in columns if c not in names]
        if missing:
            bad[path] = f"lacks column(s) {missing} named in input.columns (it has {sorted(names)})"
        else:
            counts[path] = rows
    return counts, bad


def parquet_schema_groups(files: InputFiles, paths: list[str]) -> list[list[str]]:
    """`paths` grouped by their files' Arrow schemas, groups in order of first file.

    Ray Data unifies the schemas of the files one `read_parquet` reads, before reading
    any row, and fails the whole read when two files disagree on a column's type (an
    integer `id` in one file, strings in the rest: "Unable to merge: Field id has
    incompatible types"). Reading each group on its own and turning every group into
    the one work schema before the groups meet keeps such files readable, with the
    per-row checks deciding what their values are worth. A corpus of one schema (the
    usual case) is one group. Footers are read in parallel: on S3 each is a round trip.
    """
    from concurrent.futures import ThreadPoolExecutor

    def schema_of(path: str) -> pa.Schema:
        with files.filesystem.open_input_file(path) as fh:
            return pq.read_schema(fh).remove_metadata()

    if len(paths) <= 1:
        return [list(paths)] if paths else []
    with ThreadPoolExecutor(max_workers=min(len(paths), 16)) as pool:
        schemas = list(pool.map(schema_of, paths))
    groups: dict[pa.Schema, list[str]] = {}
    for path, schema in zip(paths, schemas):
        groups.setdefault(schema, []).append(path)
    return list(groups.values())
