"""deploy and deploy:<host>: the whole pipeline, which ends in check:<host>."""


def deploy(inventory):
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Run the whole pipeline for {host.name}",
            "actions": None,
            "task_dep": [f"check:{host.name}"],
        }
