"""The latency picture: a valid SVG world map with the hosts, the visitor countries shaded by
their first visit, and the candidate that gains most. No fleet."""
import xml.etree.ElementTree as ET

import pytest

from outpost.latency import picture
from outpost.latency.dnsmap import DnsMap
from outpost.latency.report import report

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def drawn():
    rep = report([("au", "Sydney"), ("ny", "New York"), ("fr", "Paris")],
                 DnsMap.of("au", [("NA", ["ny"]), ("EU", ["fr"])]), monitors=[])
    return rep, ET.fromstring(picture.svg(rep))


def test_the_picture_is_an_svg(drawn):
    _, root = drawn
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox").startswith("0 0 1000 ")


def test_the_picture_has_the_hosts(drawn):
    rep, root = drawn
    hosts = root.findall(f".//{SVG}g[@class='host']")
    assert {g.get("data-host") for g in hosts} == {"au", "ny", "fr"}
    for g in hosts:
        assert g.find(f"{SVG}circle") is not None
        assert g.find(f"{SVG}text").text == g.get("data-host")


def test_visitor_countries_are_shaded_by_first_visit(drawn):
    rep, root = drawn
    shaded = {p.get("data-country"): p for p in root.iter(f"{SVG}path")
              if "shaded" in p.get("class", "").split()}
    assert len(shaded) >= 3
    assert set(shaded) == {r.key for r in rep.rows}
    for row in rep.rows:
        assert shaded[row.key].get("fill") == picture.colour(row.first_visit)
    others = [p for p in root.iter(f"{SVG}path") if p.get("class") == "country"]
    assert others and all(p.get("fill") == picture.NO_VISITORS for p in others)


def test_the_best_candidate_is_marked(drawn):
    rep, root = drawn
    (mark,) = root.findall(f".//{SVG}g[@class='candidate']")
    assert mark.get("data-city") == rep.candidates[0].city
    assert rep.candidates[0].gain > 0


def test_colour_bands():
    assert picture.colour(50) == picture.BANDS[0][1]
    assert picture.colour(250) == picture.BANDS[2][1]
    assert picture.colour(5000) == picture.BANDS[-1][1]


def test_png_needs_a_converter(monkeypatch):
    monkeypatch.setattr(picture.shutil, "which", lambda name: None)
    assert picture.png_command("map.svg", "map.png") is None
    monkeypatch.setattr(picture.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert picture.png_command("map.svg", "map.png") == [
        "/usr/bin/rsvg-convert", "-o", "map.png", "map.svg"]
