"""Self-contained HTML pieces for the insight reports: escaped text and inline JPEG thumbnails.

Why inline (base64 data URIs): the KFP UI and MLflow's artifact viewer show ONE file; a report that links to
images beside it shows broken pictures there. Why escaping everywhere: file names and class names come from the
user's folders, and a name like ``<script>.png`` must show as text, never run.
"""

from __future__ import annotations

import base64
import html
import io

import pandas as pd

from bakeoff import storage

THUMB_PX = 96  # longest side of a thumbnail: enough to recognise the image, small enough for hundreds per page
THUMB_QUALITY = 80

STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    ".grid{display:flex;flex-wrap:wrap;gap:10px}"
    ".card{width:170px;border:1px solid #ccc;padding:4px;font-size:12px;word-break:break-all}"
    ".card img{display:block;margin:auto;max-width:160px}"
)


def esc(value: object) -> str:
    """Text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def thumbnail(uri: str, px: int = THUMB_PX) -> str | None:
    """A ``data:image/jpeg;base64,...`` URI of a small JPEG of the image at ``uri``; None if it cannot be read
    (a report shows what it can rather than failing on one unreadable file)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(storage.read_bytes(uri))) as img:
            small = ImageOps.exif_transpose(img).convert("RGB")
            small.thumbnail((px, px))
            buffer = io.BytesIO()
            small.save(buffer, format="JPEG", quality=THUMB_QUALITY)
    except Exception:  # any unreadable file: the card shows its name without a picture
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def card(uri: str, lines: list[str]) -> str:
    """One gallery card: the thumbnail, then each line (escaped here)."""
    src = thumbnail(uri)
    img = f'<img src="{src}" alt="">' if src else "<em>(image unreadable)</em>"
    return f'<div class="card">{img}' + "".join(f"<div>{esc(line)}</div>" for line in lines) + "</div>"


def table(df: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """A DataFrame as an HTML table with every cell escaped (pandas' own to_html escapes too; this keeps the
    format of numbers in one place)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = []
    for record in df.itertuples(index=False):
        cells = (float_format.format(v) if isinstance(v, float) else v for v in record)
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def page(title: str, body: list[str]) -> str:
    """A whole HTML document (no external resources)."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{''.join(body)}</body></html>\n"
    )
