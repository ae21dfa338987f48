"""deploy and deploy:<host>: the whole pipeline, which ends in check:<host>."""
from outpost.steps import content as content_step


def deploy(inventory):
    # The logins the run will need (login:<host>) start first, all at once: doit walks one
    # host's steps after another, and the drift probe's wait for a far host would come first.
    yield {"name": None, "doc": "The whole pipeline for every host (deploy:<host> for one).",
           "task_dep": ["login"] if content_step.packages(inventory) else []}
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Run the whole pipeline for {host.name}",
            "actions": None,
            "task_dep": [f"check:{host.name}"],
        }
