"""Gradio's cache of returned images and bytes written atomically.

Gradio stores each returned image under a folder named by its content hash and rewrites that file in place
every time the same image is returned again, so a browser downloading it while another user's identical
result is being saved reads a truncated file ("Too little data for declared Content-Length"). Here the
bytes go to a unique temporary name and are renamed into place, and a file that already holds the same
content (the name is its hash) is left alone: a reader never sees a file being rewritten.

Gradio's cache sweep (``delete_cache``) iterates over the live set of files a component has handed out
while requests add to it from other threads: "Set changed size during iteration" ends its background task
for good, silently, and from then on nothing is deleted (300 users exporting: 1.5 GB left after the TTL).
Here it iterates over a copy and never stops.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger("prolab.app")


def write_once(path: Path, data: bytes) -> str:
    """``data`` at ``path`` unless a file is already there (same name = same content); atomically."""
    path = Path(path)
    if path.exists():
        try:
            os.utime(path)  # gradio's delete_cache ages files: one handed out again is fresh
        except OSError:
            pass
        return str(path.resolve())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(path.resolve())


def delete_old_files(blocks, age: float | None) -> int:
    """Delete the files ``blocks`` handed out (its components' temporary files and uploads) whose status
    changed more than ``age`` seconds ago (all of them when ``age`` is None), as gradio's sweep does, but
    over a copy of each set (other threads add to them meanwhile) and never raising. Returns how many."""
    keep: set[str] = set()
    for component in list(blocks.blocks.values()):
        keep.update(getattr(component, "keep_in_cache", set()))
    now, done = time.time(), 0
    for files in list(blocks.temp_file_sets):
        gone = set()
        for file in list(files):
            if file in keep:
                continue
            try:
                if age is None or now - os.lstat(file).st_ctime > age:
                    os.remove(file)
                    gone.add(file)
            except FileNotFoundError:
                gone.add(file)
            except OSError as exc:  # e.g. permissions: the next sweep tries again
                log.warning("cache sweep: cannot delete a file (%s)", exc.strerror or type(exc).__name__)
        files -= gone
        done += len(gone)
    return done


def install() -> None:
    """Replace gradio's in-place cache writers and its cache sweep (idempotent)."""
    from gradio import processing_utils as pu
    from gradio import route_utils

    route_utils.delete_files_created_by_app = delete_old_files  # looked up by name at every sweep
    if getattr(pu.save_pil_to_cache, "atomic", False):
        return

    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = pu.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / pu.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        return write_once(folder / f"{name}.{format}", data)

    def save_bytes_to_cache(data: bytes, file_name: str, cache_dir: str) -> str:
        folder = Path(cache_dir) / pu.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        if not Path(file_name).suffix:
            file_name = file_name + pu.detect_audio_format(data)
        return write_once(folder / Path(file_name).name, data)

    save_pil_to_cache.atomic = True
    pu.save_pil_to_cache = save_pil_to_cache
    pu.save_bytes_to_cache = save_bytes_to_cache
