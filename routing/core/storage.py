"""One way to reach local files and S3 objects, honouring the AWS SDKs' settings.

pyarrow's S3FileSystem ignores `AWS_ENDPOINT_URL` (it went for the real AWS endpoint in
our tests), so we build it ourselves from the same variables boto3 reads. That keeps
MinIO and other S3-compatible stores working, and tests can never fall back to a
public endpoint. Credentials come from the standard chain and are never formatted into
messages.
"""

from __future__ import annotations

import os
from typing import Optional
from urllib.parse import urlparse

import pyarrow.fs as pafs


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def s3_endpoint() -> Optional[str]:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def s3_filesystem() -> pafs.S3FileSystem:
    kwargs: dict = {}
    endpoint = s3_endpoint()
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def filesystem_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem for a URI and the path within it (bucket/key for S3)."""
    if is_s3(uri):
        return s3_filesystem(), uri[len("s3://"):]
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


UTF8_BOM = b"\xef\xbb\xbf"


def strip_bom(data: bytes) -> bytes:
    """`data` without a UTF-8 byte-order mark at its very start.

    Windows tools (Notepad, Excel, PowerShell's Out-File) start UTF-8 files with EF BB BF.
    It marks the encoding and is not text, so every reader of input files drops it
    before parsing; a BOM anywhere else is a character (U+FEFF) and stays.
    """
    return data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem_and_path(uri)
    with fs.open_input_stream(path) as fh:
        return fh.read()


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem_and_path(uri)
    parent = path.rsplit("/", 1)[0]
    if parent and not is_s3(uri):
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as fh:
        fh.write(data)


def exists(uri: str) -> bool:
    fs, path = filesystem_and_path(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
