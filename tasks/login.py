"""login:<host>: log in to the host at the start of a run that will push content to it (as
this machine's records tell alone), so that the login's round trips go on beside the drift
probe's instead of after them. content:<host> waits for it, and every SSH step of the run
uses that one login."""
import functools

from outpost.steps import content as content_step
from outpost.steps import login as login_step
from outpost.taskutil import action


def login(inventory):
    if not content_step.packages(inventory):
        return
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Log in to {host.name} early when its content is to be pushed",
            # Takes the project lock first (the run is about to change the host), then starts
            # the login and returns: the steps that need it wait for it.
            "actions": [action(login_step.log_in, inventory, host)],
            # By this machine's records alone; a host the probe finds drifted is pushed to (and
            # logged in to) by content:<host> itself.
            "uptodate": [functools.partial(content_step.is_current, inventory, host)],
            # The deploy user exists once the host is bootstrapped.
            "task_dep": [f"bootstrap:{host.name}"],
        }
