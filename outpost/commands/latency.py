"""`doit latency`'s host-side builder: the script that counts a host's visitors by country in
its nginx log, with the country database the host already has for gdnsd, and the parser of
what it prints. Pure: outpost.steps.latency runs the script on every host at once.

Only counts leave the host, never an address: the script prints `CC N` lines (N client
addresses placed in country CC; `??` for those the database doesn't place).
"""
from __future__ import annotations

import shlex

from outpost.commands.base import ACCESS_LOG
from outpost.commands.dns import DATABASE, HEALTH_PATH
from outpost.errors import OutpostError

UNKNOWN = "??"
# Exit statuses: the log or the database can't be read (EX_NOINPUT); mmdblookup is missing
# (EX_UNAVAILABLE).
NO_INPUT = 66
NO_LOOKUP = 69
# Where mmdblookup comes from: Debian's mmdb-bin, Chimera's libmaxminddb (cports
# main/libmaxminddb ships its programs in the main package).
LOOKUP_PACKAGE = "libmaxminddb"


def count_script(own_addresses: list[str]) -> str:
    """A POSIX sh script: each client address of the access log once (combined format: the
    address is the first field, the path the seventh), leaving out the hosts' own addresses
    (gdnsd's health checks come from them) and requests for the health path only; each looked
    up with mmdblookup, then counted per country. Only strings made of address characters are
    looked up: mmdblookup would resolve anything else as a host name."""
    own = shlex.quote(" ".join(own_addresses))
    return f"""\
log={shlex.quote(ACCESS_LOG)}
db={shlex.quote(DATABASE)}
for file in "$log" "$db"; do
    if [ ! -r "$file" ]; then echo "cannot read $file" >&2; exit {NO_INPUT}; fi
done
if ! command -v mmdblookup >/dev/null; then
    echo "mmdblookup is missing (package {LOOKUP_PACKAGE})" >&2; exit {NO_LOOKUP}
fi
awk -v own={own} -v health={shlex.quote(HEALTH_PATH)} '
    BEGIN {{ n = split(own, list, " "); for (i = 1; i <= n; i++) skip[list[i]] = 1 }}
    $1 ~ /^[0-9A-Fa-f:.]+$/ && !($1 in skip) && $7 != health && !($1 in seen) {{
        seen[$1] = 1; print $1
    }}' "$log" |
while read -r address; do
    code=$(mmdblookup --file "$db" --ip "$address" country iso_code 2>/dev/null |
           sed -n 's/^ *"\\([A-Z][A-Z]\\)" <utf8_string>$/\\1/p')
    echo "${{code:-{UNKNOWN}}}"
done | sort | uniq -c | awk '{{ print $2, $1 }}'
"""


def parse_counts(output: str, host: str) -> tuple[dict[str, int], int]:
    """({country: visitors}, visitors the database doesn't place) from the script's output."""
    counts, unknown = {}, 0
    for line in output.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or not (
                parts[0] == UNKNOWN or (len(parts[0]) == 2 and parts[0].isalpha())):
            raise OutpostError(f"host {host}, step latency: the visitor count printed "
                               f"{line!r}, not `COUNTRY COUNT`")
        if parts[0] == UNKNOWN:
            unknown = int(parts[1])
        else:
            counts[parts[0]] = int(parts[1])
    return counts, unknown
