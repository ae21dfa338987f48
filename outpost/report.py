"""doit's console reporter, plus the health check's table at the end of a run: one row per
host with its status, version, content release and median response time (the local version
of the seed's updown.io table); then the latency plan's weighted mean in one line, from what is
already known (outpost.latency.inputs: no host is asked)."""
from doit.reporter import ConsoleReporter

from outpost.latency import inputs
from outpost.terminal import visible

CHECK = "check:"


def check_table(rows: list[dict]) -> str:
    """The table, from the check:<host> results (steps.check) and failures."""
    header = ("host", "region", "status", "version", "release", "median", "requests",
              "certificate")
    lines = [header] + [
        (r["host"], r.get("region", ""), r["status"], r.get("version", "-"), r.get("release", "-"),
         f"{r['median_ms']:.1f} ms" if "median_ms" in r else "-", str(r.get("requests", "-")),
         f"{r['certificate_days']} days" if "certificate_days" in r else "-")
        for r in sorted(rows, key=lambda r: r["host"])]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


def dns_table(rows: list[dict]) -> str:
    """Continents down, nameservers across: the host each nameserver gave a visitor there."""
    nameservers = sorted({r["nameserver"] for r in rows})
    continents = sorted({r["continent"] for r in rows})
    cell = {(r["continent"], r["nameserver"]): r["answer"] for r in rows}
    # A host the map puts first that is down: its next healthy host is what is expected. Each
    # nameserver's check saw the hosts' health at its own moment: a host restarting during a
    # rollout may be down for one and up for the next, so one row can expect two hosts.
    expected = {}
    for r in rows:
        text = (r["expected"] if r["expected"] == r.get("first", r["expected"])
                else f"{r['expected']} ({r['first']} down)")
        if text not in expected.setdefault(r["continent"], []):
            expected[r["continent"]].append(text)
    expected = {continent: " or ".join(texts) for continent, texts in expected.items()}
    lines = [("continent", "expected", *(f"ns {n}" for n in nameservers))]
    lines += [(c, expected[c], *(cell.get((c, n), "-") for n in nameservers)) for c in continents]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip()
                     for line in lines)


class OutpostReporter(ConsoleReporter):
    """doit's ConsoleReporter; collects the check:<host> results and prints their table. All it
    writes is made visible (outpost.terminal): nothing a host says is a terminal's command."""

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.checks = []
        self.dns_rows = []

    def write(self, text):
        # Failures' messages carry hosts' output (stderr tails), the tables what hosts said.
        super().write(visible(text))

    def add_success(self, task):
        super().add_success(task)
        if task.name.startswith(CHECK) and "status" in task.values:
            self.checks.append(task.values)
            self.dns_rows += task.values.get("dns", [])

    def add_failure(self, task, fail_info):
        super().add_failure(task, fail_info)
        if task.name.startswith(CHECK):
            self.checks.append({"host": task.name[len(CHECK):], "status": "FAIL"})

    def complete_run(self):
        if self.checks:
            self.write("\n" + check_table(self.checks) + "\n\n")
        if self.dns_rows:
            self.write("GeoDNS: the host each nameserver gives a visitor on each continent\n"
                       + dns_table(self.dns_rows) + "\n\n")
        line = inputs.mean_line(self.inventory, {r["host"] for r in self.checks
                                                 if r["status"] != "ok"}) if self.checks else None
        if line:
            self.write(line + "\n\n")
        super().complete_run()


def reporter_for(inventory) -> type:
    """OutpostReporter for this inventory (doit makes its reporter from a class)."""
    return type("OutpostReporter", (OutpostReporter,), {"inventory": inventory})
