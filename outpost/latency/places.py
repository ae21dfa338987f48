"""Where things are: city names and countries as points on the globe, offline.

    place("Sydney")            a city of the table below
    place("-33.87,151.21")     coordinates (a host or candidate may be anywhere)
    place("45.3,-73.9,CA")     coordinates with the country they are in (needed to route them)
    country("DE") / country("Germany")  a visitor country: its point and continent

Cities: the fleet's (Sydney, New York, Paris), updown.io's monitoring locations, and cities where
low-cost VPSes are commonly sold (LowEndBox listings: RackNerd, BuyVM, Vultr and the like).
updown.io's nine locations of the seed's time (lan mia bhs rbx fra hel sin tok syd) carry the
coordinates updown.io publishes for its nodes (https://updown.io/api/nodes, as the essentialkaos
updown client's test fixture records it, 2025). Other cities: their usual city-centre coordinates.

A country's point is its capital, with one exception: the United States, whose visitors are
spread over a continent; there the point is the US Census Bureau's 2020 mean centre of
population (near Hartville, Missouri). Continents are gdnsd's codes (AF AS EU NA OC SA AN), as
MaxMind-format databases place each country. Countries missing from the table (rare visitors in
host logs) are looked up in the map library's Natural Earth data (shapes.py): its label point.
"""
from __future__ import annotations

from dataclasses import dataclass

from outpost.errors import OutpostError

CONTINENTS = ("AF", "AS", "EU", "NA", "OC", "SA", "AN")


@dataclass(frozen=True)
class Place:
    """A point: `key` names it in measured-RTT files and the report (a city's name, a country's
    alpha-2 code, or the coordinates as written); `country` is "" when unknown."""
    key: str
    lat: float
    lon: float
    country: str = ""


# name: (lat, lon, country)
CITIES = {
    "Sydney": (-33.8688, 151.2093, "AU"),
    "New York": (40.7128, -74.0060, "US"),
    "Paris": (48.8566, 2.3522, "FR"),
    # updown.io's nodes, at the coordinates updown.io gives them.
    "Los Angeles": (34.0729, -118.2606, "US"),
    "Miami": (25.8124, -80.2401, "US"),
    "Beauharnois": (45.315, -73.8779, "CA"),
    "Roubaix": (50.6871, 3.1773, "FR"),
    "Frankfurt": (50.1137, 8.7119, "DE"),
    "Helsinki": (60.17116, 24.93265, "FI"),
    "Singapore": (1.2855, 103.8565, "SG"),
    "Tokyo": (35.5833, 139.7483, "JP"),
    # Later updown.io nodes.
    "Toronto": (43.64869, -79.38544, "CA"),
    "Cape Town": (-33.91909, 18.42198, "ZA"),
    # Cheap-VPS cities.
    "San Jose": (37.3382, -121.8863, "US"),
    "Seattle": (47.6062, -122.3321, "US"),
    "Dallas": (32.7767, -96.7970, "US"),
    "Chicago": (41.8781, -87.6298, "US"),
    "Atlanta": (33.7490, -84.3880, "US"),
    "Ashburn": (39.0438, -77.4874, "US"),
    "Montreal": (45.5019, -73.5674, "CA"),
    "London": (51.5074, -0.1278, "GB"),
    "Amsterdam": (52.3676, 4.9041, "NL"),
    "Strasbourg": (48.5734, 7.7521, "FR"),
    "Stockholm": (59.3293, 18.0686, "SE"),
    "Warsaw": (52.2297, 21.0122, "PL"),
    "Madrid": (40.4168, -3.7038, "ES"),
    "Milan": (45.4642, 9.1900, "IT"),
    "Hong Kong": (22.3193, 114.1694, "HK"),
    "Seoul": (37.5665, 126.9780, "KR"),
    "Mumbai": (19.0760, 72.8777, "IN"),
    "Dubai": (25.2048, 55.2708, "AE"),
    "Melbourne": (-37.8136, 144.9631, "AU"),
    "Auckland": (-36.8485, 174.7633, "NZ"),
    "São Paulo": (-23.5505, -46.6333, "BR"),
    "Santiago": (-33.4489, -70.6693, "CL"),
    "Mexico City": (19.4326, -99.1332, "MX"),
    "Johannesburg": (-26.2041, 28.0473, "ZA"),
    "Lagos": (6.5244, 3.3792, "NG"),
    "Nairobi": (-1.2921, 36.8219, "KE"),
}

# The nine monitoring locations of updown.io when the seed measured its 807 ms and 189 ms.
UPDOWN_MONITORS = ["Los Angeles", "Miami", "Beauharnois", "Roubaix", "Frankfurt", "Helsinki",
                   "Singapore", "Tokyo", "Sydney"]

# Where low-cost VPSes are sold, spread over every continent with visitors.
VPS_CANDIDATES = ["Los Angeles", "Seattle", "Dallas", "Chicago", "Ashburn", "Toronto", "London",
                  "Amsterdam", "Frankfurt", "Stockholm", "Singapore", "Tokyo", "Hong Kong",
                  "Mumbai", "São Paulo", "Johannesburg"]

# alpha-2: (English name, continent, lat, lon of the capital; US: mean centre of population)
COUNTRIES = {
    "AE": ("United Arab Emirates", "AS", 24.4539, 54.3773),
    "AR": ("Argentina", "SA", -34.6037, -58.3816),
    "AT": ("Austria", "EU", 48.2082, 16.3738),
    "AU": ("Australia", "OC", -35.2809, 149.1300),
    "BE": ("Belgium", "EU", 50.8503, 4.3517),
    "BR": ("Brazil", "SA", -15.7939, -47.8828),
    "CA": ("Canada", "NA", 45.4215, -75.6972),
    "CH": ("Switzerland", "EU", 46.9480, 7.4474),
    "CL": ("Chile", "SA", -33.4489, -70.6693),
    "CN": ("China", "AS", 39.9042, 116.4074),
    "CO": ("Colombia", "SA", 4.7110, -74.0721),
    "CZ": ("Czechia", "EU", 50.0755, 14.4378),
    "DE": ("Germany", "EU", 52.5200, 13.4050),
    "DK": ("Denmark", "EU", 55.6761, 12.5683),
    "EG": ("Egypt", "AF", 30.0444, 31.2357),
    "ES": ("Spain", "EU", 40.4168, -3.7038),
    "FI": ("Finland", "EU", 60.1699, 24.9384),
    "FR": ("France", "EU", 48.8566, 2.3522),
    "GB": ("United Kingdom", "EU", 51.5074, -0.1278),
    "HK": ("Hong Kong", "AS", 22.3193, 114.1694),
    "ID": ("Indonesia", "AS", -6.2088, 106.8456),
    "IE": ("Ireland", "EU", 53.3498, -6.2603),
    "IL": ("Israel", "AS", 31.7683, 35.2137),
    "IN": ("India", "AS", 28.6139, 77.2090),
    "IT": ("Italy", "EU", 41.9028, 12.4964),
    "JP": ("Japan", "AS", 35.6762, 139.6503),
    "KE": ("Kenya", "AF", -1.2921, 36.8219),
    "KR": ("South Korea", "AS", 37.5665, 126.9780),
    "MX": ("Mexico", "NA", 19.4326, -99.1332),
    "MY": ("Malaysia", "AS", 3.1390, 101.6869),
    "NG": ("Nigeria", "AF", 9.0765, 7.3986),
    "NL": ("Netherlands", "EU", 52.3676, 4.9041),
    "NO": ("Norway", "EU", 59.9139, 10.7522),
    "NZ": ("New Zealand", "OC", -41.2865, 174.7762),
    "PH": ("Philippines", "AS", 14.5995, 120.9842),
    "PL": ("Poland", "EU", 52.2297, 21.0122),
    "PT": ("Portugal", "EU", 38.7223, -9.1393),
    "RU": ("Russia", "EU", 55.7558, 37.6173),
    "SE": ("Sweden", "EU", 59.3293, 18.0686),
    "SG": ("Singapore", "AS", 1.3521, 103.8198),
    "TH": ("Thailand", "AS", 13.7563, 100.5018),
    "TR": ("Turkey", "AS", 39.9334, 32.8597),
    "TW": ("Taiwan", "AS", 25.0330, 121.5654),
    "UA": ("Ukraine", "EU", 50.4501, 30.5234),
    "US": ("United States", "NA", 37.4158, -92.2894),
    "VN": ("Vietnam", "AS", 21.0278, 105.8342),
    "ZA": ("South Africa", "AF", -25.7479, 28.2293),
}
_BY_NAME = {name.casefold(): code for code, (name, *_) in COUNTRIES.items()}
_CITY_KEYS = {name.casefold(): name for name in CITIES}


def _coordinates(text: str) -> Place | None:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        return None
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise OutpostError(f"{text!r}: latitude must be within -90..90 and longitude -180..180")
    code = parts[2].upper() if len(parts) == 3 else ""
    if code and code not in COUNTRIES and not _natural_earth(code):
        raise OutpostError(f"{text!r}: unknown country code {parts[2]!r}")
    return Place(text, lat, lon, code)


def place(text: str, what: str = "place") -> Place:
    """A city of the table, or "lat,lon[,CC]". `what` names the setting in the error ("": the
    caller's message names it)."""
    found = _CITY_KEYS.get(text.strip().casefold())
    if found:
        lat, lon, code = CITIES[found]
        return Place(found, lat, lon, code)
    point = _coordinates(text)
    if point is None:
        raise OutpostError(f"{what} {text!r}: ".lstrip() + f"unknown city; give one of "
                           f"{', '.join(CITIES)} or coordinates as \"lat,lon\"")
    return point


def country_code(text: str, what: str = "country") -> str:
    """The alpha-2 code of a country given by code or English name."""
    code = text.strip().upper()
    if code in COUNTRIES or (len(code) == 2 and _natural_earth(code)):
        return code
    found = _BY_NAME.get(text.strip().casefold())
    if found:
        return found
    raise OutpostError(f"{what} {text!r}: unknown country; give its ISO 3166 alpha-2 code "
                       "(e.g. DE) or its English name")


def country(code: str) -> tuple[str, str, Place]:
    """(name, continent, point) of a country known by its alpha-2 code."""
    if code in COUNTRIES:
        name, continent, lat, lon = COUNTRIES[code]
        return name, continent, Place(code, lat, lon, code)
    name, continent, lat, lon = _natural_earth(code)
    return name, continent, Place(code, lat, lon, code)


def continent_of(point: Place, what: str) -> str:
    if not point.country:
        raise OutpostError(f"{what} {point.key!r}: coordinates need a country code to be routed "
                           f"by [dns.map], e.g. \"{point.key},CA\"")
    return country(point.country)[1]


def _natural_earth(code: str):
    from outpost.latency import shapes   # the map library: loaded only for a rare country
    return shapes.country_facts().get(code)
