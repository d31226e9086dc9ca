"""pytest-xdist scheduling by the suite's groups, on public hooks only.

``--dist loadgroup`` sends each group of tests to one worker. xdist 3.8 names a test's group by appending
``@group`` to a private node-id attribute that pytest 9 no longer reads, so here the groups travel another
way: the controller gives every worker a folder (``pytest_configure_node``, ``workerinput``), each worker
writes its tests' groups there at the end of collection, and the controller's scheduler
(``pytest_xdist_make_scheduler``) reads them before it hands out work, one work unit per group in the
order collected. :class:`GroupScheduling` is xdist's ``LoadScopeScheduling`` with the scope of a test
looked up (``_split_scope``, the method xdist's own load-file and load-group schedulers override).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

FOLDER = "popularity_groups"  # the workerinput key


class GroupScheduling(LoadScopeScheduling):
    """Work units are the groups the workers wrote; a test without one is a unit of its own."""

    def __init__(self, config: pytest.Config, log, folder: Path):
        super().__init__(config, log)
        self.folder, self.groups = folder, {}

    def schedule(self) -> None:
        if not self.groups:  # every worker's collection is in, so is every worker's file
            for path in sorted(self.folder.glob("*.json")):
                self.groups.update(json.loads(path.read_text()))
        super().schedule()

    def _split_scope(self, nodeid: str) -> str:
        return self.groups.get(nodeid, nodeid)


class GroupsPlugin:
    """Registered on the controller and on each worker when the run uses ``--dist loadgroup``."""

    def __init__(self, group: Callable[[pytest.Item], str]):
        self.group, self.folder = group, None

    def pytest_configure(self, config: pytest.Config) -> None:
        if not hasattr(config, "workerinput"):  # the controller
            self.folder = Path(tempfile.mkdtemp(prefix="pytest-groups-"))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def pytest_configure_node(self, node) -> None:
        node.workerinput[FOLDER] = str(self.folder)

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log):
        return GroupScheduling(config, log, self.folder)

    @pytest.hookimpl(trylast=True)  # after the conftest has ordered the items
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        workerinput = getattr(config, "workerinput", None)
        if workerinput is None:
            return
        groups = {item.nodeid: self.group(item) for item in items}
        path = Path(workerinput[FOLDER]) / f"{workerinput['workerid']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(path)


def register(config: pytest.Config, group: Callable[[pytest.Item], str]) -> None:
    """Schedule by ``group`` when xdist runs the suite with ``--dist loadgroup``: on the controller, and on
    the workers it gave a folder to (a worker itself runs with ``--dist no``)."""
    workerinput = getattr(config, "workerinput", None)
    controller = workerinput is None and config.pluginmanager.hasplugin("xdist") \
        and config.getoption("dist", None) == "loadgroup"
    if controller or (workerinput is not None and FOLDER in workerinput):
        config.pluginmanager.register(GroupsPlugin(group), "popularity-xdist-groups")
