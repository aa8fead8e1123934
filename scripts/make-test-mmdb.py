#!/usr/bin/env python3
"""Writes tests/data/test-country.mmdb, the MMDB file the geo reader's tests read.

A GeoLite2-Country-shaped database (records with country, registered_country and continent,
as MaxMind documents them) of documentation addresses only, written with the mmdb-writer
package from PyPI (https://pypi.org/project/mmdb-writer/):

    python3 -m venv /tmp/mmdb-venv && /tmp/mmdb-venv/bin/pip install mmdb-writer
    /tmp/mmdb-venv/bin/python scripts/make-test-mmdb.py tests/data/test-country.mmdb
"""

import sys

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def country(code, name, geoname_id):
    return {"iso_code": code, "names": {"en": name}, "geoname_id": geoname_id}


DE = country("DE", "Germany", 2921044)
US = country("US", "United States", 6252001)
FR = country("FR", "France", 3017382)
EUROPE = {"code": "EU", "names": {"en": "Europe"}, "geoname_id": 6255148}

rows = [
    # located and registered in DE
    (["192.0.2.0/25", "2001:db8::/48"], {"country": DE, "registered_country": DE, "continent": EUROPE}),
    # no location, registered in DE (the registered country counts)
    (["192.0.2.128/25"], {"registered_country": DE, "continent": EUROPE}),
    (["198.51.100.0/24", "2001:db8:1::/48"], {"country": US, "registered_country": US}),
    (["203.0.113.0/24"], {"country": FR, "registered_country": DE, "continent": EUROPE}),
    # a continent only: no country
    (["2001:db8:2::/48"], {"continent": EUROPE}),
]

w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country",
               languages=["en"], description="pbxwall test database (documentation addresses)")
for nets, record in rows:
    w.insert_network(IPSet(nets), record)
w.to_db_file(sys.argv[1])
