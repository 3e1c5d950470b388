"""Prophesee's text header (RAW and DAT files): lines starting with ``%`` before the binary data."""
from __future__ import annotations

import re

from ..data.errors import DataError

# The header is at most this long (real headers are well under 2 KiB).
MAX_HEADER_BYTES = 1 << 16
# Sensor size of Prophesee camera plugins whose RAW header has no geometry line (older files).
PLUGIN_SENSORS = {"gen41": (1280, 720), "imx636": (1280, 720), "gen4": (1280, 720), "gen31": (640, 480),
                  "gen3": (640, 480), "imx8": (1280, 720)}


def read_header(path: str) -> tuple[list[str], int]:
    """(header lines without ``% ``, byte length of the header). The header ends at a ``% end``
    line, or before the first line that does not start with ``%``."""
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_HEADER_BYTES)
    except OSError as e:
        raise DataError(path, f"unreadable event file: {e}") from None
    lines, pos = [], 0
    while pos < len(head) and head[pos:pos + 1] == b"%":
        end = head.find(b"\n", pos)
        if end < 0:
            raise DataError(path, f"header line at byte {pos} has no end (truncated file, or not a Prophesee file)")
        text = head[pos + 1:end].decode("latin-1").strip()
        pos = end + 1
        if text == "end":
            break
        lines.append(text)
    return lines, pos


def header_value(lines: list[str], key: str) -> str | None:
    """The value of the first line ``key value`` (key case-insensitive), or None."""
    for line in lines:
        parts = line.split(None, 1)
        if parts and parts[0].lower() == key.lower():
            return parts[1].strip() if len(parts) > 1 else ""
    return None


def sensor_size(lines: list[str]) -> tuple[int, int] | None:
    """(width, height) from ``% geometry WxH``, ``% format EVT3;height=H;width=W``,
    ``% Width W``/``% Height H`` or a known ``% plugin_name``; None when the header says none."""
    geometry = header_value(lines, "geometry")
    if geometry:
        m = re.fullmatch(r"(\d+)\s*x\s*(\d+)", geometry)
        if m:
            return int(m.group(1)), int(m.group(2))
    fmt = header_value(lines, "format")
    if fmt:
        fields = dict(kv.split("=", 1) for kv in fmt.split(";")[1:] if "=" in kv)
        if "width" in fields and "height" in fields:
            return int(fields["width"]), int(fields["height"])
    w, h = header_value(lines, "width"), header_value(lines, "height")
    if w and h and w.isdigit() and h.isdigit():
        return int(w), int(h)
    plugin = (header_value(lines, "plugin_name") or "").lower()
    for name, size in PLUGIN_SENSORS.items():
        if name in plugin:
            return size
    return None


def declared_evt(lines: list[str]) -> str | None:
    """"evt2"/"evt3"/"evt21" from ``% evt 3.0`` or ``% format EVT3;...``; a header whose two
    lines disagree is a ValueError (the caller names the file)."""
    names = set()
    evt = header_value(lines, "evt")
    if evt:
        names.add("evt" + evt.replace(".0", "").replace(".", ""))
    fmt = header_value(lines, "format")
    if fmt:
        names.add(fmt.split(";")[0].strip().lower())
    if len(names) > 1:
        raise ValueError(f"the header's '% evt' and '% format' lines disagree ({sorted(names)})")
    return names.pop() if names else None
