"""login:<host> (tasks/login.py): the run logs in to each host content will be pushed to at its
start, before doit walks the hosts' steps one after another, and only when this machine's
records say a push is coming. No host is touched: the task graph and the uptodate alone."""
import dataclasses

from outpost.inventory import load
from outpost.steps import content as content_step
from tasks import content as content_tasks
from tasks import deploy as deploy_tasks
from tasks import login as login_tasks


def by_name(tasks):
    return {task["name"]: task for task in tasks}


def test_deploy_and_content_begin_with_every_login(project):
    inventory = load(project / "inventory.toml")
    # A group task's first task_dep is where doit's walk starts: all logins, before any host.
    for generator in (deploy_tasks.deploy, content_tasks.content):
        group = by_name(generator(inventory))[None]
        assert group["task_dep"] == ["login"]
    contents = by_name(content_tasks.content(inventory))
    for host in inventory.hosts:
        assert contents[host.name]["task_dep"][0] == f"login:{host.name}"


def test_a_login_runs_only_when_content_is_to_be_pushed(project):
    inventory = load(project / "inventory.toml")
    logins = by_name(login_tasks.login(inventory))
    au = inventory.host("au")
    assert logins["au"]["task_dep"] == ["bootstrap:au"]  # the deploy user exists by then
    [uptodate] = logins["au"]["uptodate"]
    assert uptodate() is False  # never pushed from here: content:au will push
    # au's record says it has the release of content/: nothing to push, no login.
    package = content_step.packages(inventory)[0]
    release = content_step.manifest(inventory, package)
    record = content_step.Served(release.release, "r1", release.digest, ("r1",))
    content_step._record(inventory, package, au, record)
    assert uptodate() is True
    assert logins["ny"]["uptodate"][0]() is False
    # The check saw au serve something else: the next run pushes to it again, so logs in.
    content_step._record(inventory, package, au, dataclasses.replace(record, drift="changed"))
    assert uptodate() is False


def test_no_content_no_login_task(project):
    inventory = load(project / "inventory.toml")
    bare = dataclasses.replace(inventory, packages=[dataclasses.replace(p, content=None)
                                                    for p in inventory.packages])
    assert list(login_tasks.login(bare)) == []
    assert by_name(deploy_tasks.deploy(bare))[None]["task_dep"] == []
