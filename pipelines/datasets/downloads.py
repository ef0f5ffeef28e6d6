"""One raw data file: from the offline mirror (`RNNKIT_DATA_DIR`), else downloaded once; and
whether a download's host answers at all (TFDS retries an unreachable one for minutes)."""

from __future__ import annotations

import logging
import os
import urllib.request
from pathlib import Path

from pipelines.config import data_dir, tfds_dir
from serving.errors import DataUnavailable

log = logging.getLogger("pipelines.datasets.downloads")


def fetch(url: str, folder: str, filename: str, what: str, timeout_s: float = 30.0) -> Path:
    """The local copy of a data file: `RNNKIT_DATA_DIR/<folder>/<filename>` when it exists,
    else a download of `url` cached under the TFDS cache's `downloads/<folder>/`.

    Args:
        url: the canonical address.
        folder: the folder in the mirror and in the cache.
        filename: the file's name there.
        what: the data set's name for messages.
        timeout_s: network timeout.
    """
    root = data_dir()
    if root is not None and (root / folder / filename).is_file():
        return root / folder / filename
    cached = tfds_dir() / "downloads" / folder / filename
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s", what, url)
    tmp = cached.with_name(f".tmp-{filename}-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        where = f"{root / folder / filename} does not exist and " if root else ""
        raise DataUnavailable(f"cannot get {what}: {where}{url} cannot be downloaded ({err})",
                              f"connect to the internet, or put {filename} into <dir>/{folder}/ "
                              "and set RNNKIT_DATA_DIR=<dir>") from None
    os.replace(tmp, cached)  # whole or not at all
    return cached


def reachable(url: str, timeout_s: float = 5.0) -> bool:
    """Whether a TCP connection to the URL's host opens within the timeout.

    Args:
        url: the address to download from.
        timeout_s: how long to wait for the connection.
    """
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False
