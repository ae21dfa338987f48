"""latency: the latency plan (README.md, "The latency plan"): what visitors wait for under the
current map, and where the next host should go. Only when asked for; it only reads the hosts."""
from outpost.steps import latency as latency_step
from outpost.taskutil import action


def latency(inventory):
    yield {
        "basename": "latency",
        "doc": "The latency plan: visitors' first visit under the current map, the map that "
               "would be faster, where the next host should go; build/latency/map.svg",
        # No inputs: it always runs. It counts logs and asks health, and changes no host.
        "actions": [action(latency_step.latency, inventory, read_only=True)],
        "verbosity": 2,
    }
