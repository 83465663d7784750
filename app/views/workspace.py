"""The workspace line under the tabs: what the server keeps of this browser's work."""
from __future__ import annotations

FORGOTTEN = ("<small>Your saved work was deleted; this browser starts afresh "
             "(pick an image and press Segment).</small>")


def note_text(keep_state: bool, mb_each: float) -> str:
    """The line under the tabs saying what this server keeps of a browser's work."""
    if not keep_state:
        return "<small>This server keeps nothing after your session ends (`--no-state`).</small>"
    return (f"<small>Your label-set edits, novel categories, custom sets and evaluations are kept for this browser "
            f"(up to {mb_each:g} MB; images are not kept) and come back after a reload or a server "
            "restart.</small>")
