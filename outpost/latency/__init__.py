"""Latency: what visitors wait for under the current GeoDNS map, and where the next host should
go (issue 20). A library: no SSH, no network; the caller passes plain data (the inventory's
hosts and [dns.map], visitor shares or log counts, measured round trips) and writes the files.
`doit latency` is tasks/latency.py -> outpost/steps/latency.py (which asks the hosts).

    places.py    city names and countries -> points on the globe, offline
    model.py     round trips from distance; a first visit from round trips; measured-RTT CSV
    visitors.py  visitor shares: the seed's default, a table, or counts from the hosts' logs
    dnsmap.py    the map's routing (gdnsd's rules, outpost.commands.dns) and the best map
    report.py    report(...) -> Report, and render(report) -> text
    picture.py   the world map (SVG); shapes.py, the Natural Earth shapes a PyPI package ships
    inputs.py    the report's input from the inventory and from what build/ keeps
"""
