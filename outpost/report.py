"""doit's console reporter, plus the health check's table at the end of a run: one row per
host with its status, version, content release and median response time (the local version
of the seed's updown.io table)."""
from doit.reporter import ConsoleReporter

CHECK = "check:"


def check_table(rows: list[dict]) -> str:
    """The table, from the check:<host> results (steps.check) and failures."""
    header = ("host", "region", "status", "version", "release", "median", "requests")
    lines = [header] + [
        (r["host"], r.get("region", ""), r["status"], r.get("version", "-"), r.get("release", "-"),
         f"{r['median_ms']:.1f} ms" if "median_ms" in r else "-", str(r.get("requests", "-")))
        for r in sorted(rows, key=lambda r: r["host"])]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


class OutpostReporter(ConsoleReporter):
    """doit's ConsoleReporter; collects the check:<host> results and prints their table."""

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.checks = []

    def add_success(self, task):
        super().add_success(task)
        if task.name.startswith(CHECK) and "status" in task.values:
            self.checks.append(task.values)

    def add_failure(self, task, fail_info):
        super().add_failure(task, fail_info)
        if task.name.startswith(CHECK):
            self.checks.append({"host": task.name[len(CHECK):], "status": "FAIL"})

    def complete_run(self):
        if self.checks:
            self.write("\n" + check_table(self.checks) + "\n\n")
        super().complete_run()
