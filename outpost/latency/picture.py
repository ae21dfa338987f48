"""The world map: each visitor country shaded by its estimated first visit, the hosts, and the
candidate city that gains most. An SVG string; the caller writes it (build/latency/) and may
turn it into a PNG with png_command().

The shapes are Natural Earth's countries (shapes.py); shapely simplifies them to a map's
detail. Both load lazily, on the first picture: a no-op `doit deploy` imports neither
(tests/test_imports.py).

Projection: plate carrée (x from longitude, y from latitude), so a host's coordinates place it
with no projection library.
"""
from __future__ import annotations

import shutil
from xml.sax.saxutils import escape

from outpost.latency.shapes import code_of, reader

WIDTH = 1000
SCALE = WIDTH / 360            # px per degree
TOP, BOTTOM = 84.0, -58.0      # latitudes shown (Antarctica left out)
MAP_HEIGHT = (TOP - BOTTOM) * SCALE
LEGEND_HEIGHT = 70
SIMPLIFY_DEGREES = 0.1
# First-visit bands (ms) and their colours, fixed so that two pictures compare.
BANDS = [(100, "#1a9850"), (200, "#91cf60"), (300, "#fee08b"), (500, "#fc8d59"),
         (float("inf"), "#d73027")]
NO_VISITORS = "#d9d9d9"


def xy(lat: float, lon: float) -> tuple[float, float]:
    return (lon + 180) * SCALE, (TOP - lat) * SCALE


def _path(geometry) -> str:
    polygons = getattr(geometry, "geoms", [geometry])
    parts = []
    for polygon in polygons:
        for ring in [polygon.exterior, *polygon.interiors]:
            points = [xy(lat, lon) for lon, lat in ring.coords]
            if len(points) >= 4:
                parts.append("M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points) + "Z")
    return "".join(parts)


def _shapes():
    """(alpha-2, name, SVG path data) of every country, simplified."""
    from shapely.geometry import shape
    for item in reader().iterShapeRecords(fields=["ISO_A2_EH", "ISO_A2", "NAME"]):
        geometry = shape(item.shape.__geo_interface__)
        small = geometry.simplify(SIMPLIFY_DEGREES, preserve_topology=True)
        d = _path(small if not small.is_empty else geometry)
        if d:
            yield code_of(item.record), item.record["NAME"], d


def colour(ms: float) -> str:
    return next(c for limit, c in BANDS if ms < limit)


def _legend() -> list[str]:
    y = MAP_HEIGHT + 20
    out, lower, x = [], 0, 10
    for limit, fill in BANDS:
        label = f"{lower}-{limit:.0f} ms" if limit != float("inf") else f"{lower}+ ms"
        out.append(f'<rect x="{x}" y="{y}" width="18" height="12" fill="{fill}"/>'
                   f'<text x="{x + 24}" y="{y + 10}">{label}</text>')
        x += 110
        lower = int(limit) if limit != float("inf") else lower
    out.append(f'<text x="{x + 10}" y="{y + 10}">first visit, by visitor country</text>')
    return out


def svg(rep) -> str:
    """The picture of a report (outpost.latency.report.Report)."""
    visits = {r.key: r for r in rep.rows}
    height = MAP_HEIGHT + LEGEND_HEIGHT
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
           f'viewBox="0 0 {WIDTH} {height:.0f}" font-family="sans-serif" font-size="11">',
           f"<title>First visit by country: weighted mean {rep.mean:.0f} ms</title>",
           f'<clipPath id="map"><rect width="{WIDTH}" height="{MAP_HEIGHT:.0f}"/></clipPath>',
           f'<rect width="{WIDTH}" height="{MAP_HEIGHT:.0f}" fill="#eef4fb"/>',
           '<g id="countries" stroke="#ffffff" stroke-width="0.3" clip-path="url(#map)">']
    for code, name, d in _shapes():
        row = visits.get(code)
        if row:
            out.append(f'<path class="country shaded" data-country="{code}" '
                       f'fill="{colour(row.first_visit)}" d="{d}"><title>{escape(name)}: '
                       f'{row.first_visit:.0f} ms from {escape(row.host)}</title></path>')
        else:
            out.append(f'<path class="country" data-country="{code}" fill="{NO_VISITORS}" '
                       f'd="{d}"/>')
    out.append("</g>")
    out.append('<g id="hosts">')
    for name, point in rep.hosts:
        x, y = xy(point.lat, point.lon)
        out.append(f'<g class="host" data-host="{escape(name)}"><circle cx="{x:.1f}" '
                   f'cy="{y:.1f}" r="5" fill="#1f4e9c" stroke="#ffffff" stroke-width="1.5"/>'
                   f'<text x="{x + 7:.1f}" y="{y + 4:.1f}">{escape(name)}</text></g>')
    out.append("</g>")
    if rep.candidates and rep.candidates[0].gain > 0:
        best = rep.candidates[0]
        point = next(p for n, p in _candidate_places(rep) if n == best.city)
        x, y = xy(point.lat, point.lon)
        star = " ".join(f"{x + dx:.1f},{y + dy:.1f}" for dx, dy in
                        [(0, -8), (2.4, -2.5), (7.6, -2.5), (3.5, 1), (4.7, 6.5), (0, 3.3),
                         (-4.7, 6.5), (-3.5, 1), (-7.6, -2.5), (-2.4, -2.5)])
        # The label goes on the side with room for it.
        side = (f'x="{x - 9:.1f}" text-anchor="end"' if x > WIDTH - 200 else f'x="{x + 9:.1f}"')
        out.append(f'<g class="candidate" data-city="{escape(best.city)}">'
                   f'<polygon points="{star}" fill="#c51b7d" stroke="#ffffff"/>'
                   f'<text {side} y="{y + 4:.1f}">{escape(best.city)}: next host, '
                   f'-{best.gain:.0f} ms</text></g>')
    out += _legend()
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _candidate_places(rep):
    from outpost.latency.places import place
    return [(c.city, place(c.city)) for c in rep.candidates]


def png_command(svg_path: str, png_path: str) -> list[str] | None:
    """The argv that turns the SVG into a PNG, or None when no converter is installed."""
    tool = shutil.which("rsvg-convert")
    return [tool, "-o", png_path, svg_path] if tool else None
