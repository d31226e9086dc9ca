"""The README as a test plan: every `popularity` command it shows is a command with those options, its team
section feeds the retrain source what `popularity demo-data` writes, its numbers live in docs/BENCHMARKS.md,
and its layout names what the tree holds. (tests/integration/test_production.py runs the team section.)"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _shell_lines(text: str) -> list[str]:
    """Command lines of the ```bash blocks and of the indented code blocks (a trailing backslash joins the next
    line), comments dropped."""
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) for line in block.splitlines()]
    previous = ""
    for line in text.splitlines():
        if previous.endswith("\\") or re.match(r"^ {4}\S", line):
            lines.append(line.strip())
        previous = line
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line)
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in joined if line.strip()]


def _popularity_calls() -> list[list[str]]:
    calls = []
    for line in _shell_lines(README):
        inner = re.findall(r"\$\((popularity[^)]*)\)", line)  # eval "$(popularity stack env)"
        line = re.sub(r"\$\(popularity[^)]*\)", "", line)
        for part in [*inner, *re.split(r"&&|\|\||;", line)]:
            argv = shlex.split(part.strip())
            if argv and argv[0] == "popularity":
                calls.append(argv)
    return calls


def _team_section() -> str:
    section = README[README.index("\n## Run it as a team\n"):]
    return section[: section.index("\n## ", 1)]


@pytest.fixture(scope="module")
def cli():
    import typer

    from cli.main import app

    return typer.main.get_command(app)


def test_the_readme_shows_the_commands_a_newcomer_needs():
    calls = {" ".join(argv[:2]) for argv in _popularity_calls()}
    assert {"popularity demo-data", "popularity stack", "popularity model", "popularity predict",
            "popularity ui", "popularity serve"} <= calls, calls


@pytest.mark.parametrize("argv", _popularity_calls(), ids=lambda argv: " ".join(argv)[:60])
def test_every_readme_command_is_a_cli_command_with_those_options(cli, argv):
    command, rest = cli, argv[1:]
    while hasattr(command, "commands"):
        assert rest and rest[0] in command.commands, f"`{shlex.join(argv)}`: no such command"
        command, rest = command.commands[rest[0]], rest[1:]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [part.split("=", 1)[0] for part in rest if part.startswith("--") and part.split("=", 1)[0] not in known]
    assert not unknown, f"`{shlex.join(argv)}` has no option {unknown}"


def test_the_team_section_retrains_from_the_folder_that_demo_data_writes():
    """Followed literally, the drift-started retrain finds fresh data: the retrain source is the manifest that
    `popularity demo-data` writes, and a second draw replaces it before drift is planted."""
    lines = _shell_lines(_team_section())
    draws = [shlex.split(line) for line in lines if line.startswith("popularity demo-data")]
    folders = {argv[2] for argv in draws}
    assert len(draws) == 2 and len(folders) == 1, draws
    (folder,) = folders
    (export,) = [line for line in lines if line.startswith("export POPULARITY_DRIFT__RETRAIN_SOURCE=")]
    assert export.endswith(f"=manifest:$PWD/{folder}/manifest.csv"), export
    order = [next(i for i, line in enumerate(lines) if line.startswith(start)) for start in (
        "popularity demo-data", "export POPULARITY_DRIFT__RETRAIN_SOURCE", "popularity stack up",
        "prefect deployment run retrain/", "popularity demo-data incoming --shift", "popularity predict",
        "prefect deployment run monitor/")]
    assert order == sorted(order), lines
    assert "prefect deployment ls" not in "\n".join(lines)  # it fails with a 422 against prefect 3.8.8


def test_the_numbers_live_in_their_own_document_and_the_readme_links_it():
    benchmarks = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    assert "(docs/BENCHMARKS.md)" in README
    for table_row in ("| `cnn` (MobileNetV2, ImageNet weights", "| adaptive batching ÷ batching off",
                      "| pool B unshifted | report | false alarms"):
        assert table_row in benchmarks and table_row not in README
    first_screen = README[: README.index("\n## Run it as a team\n")]
    assert "make demo" in first_screen and "make test" in first_screen and "popularity ui" in first_screen


def test_the_layout_section_names_what_the_tree_holds():
    layout = README[README.index("\n## Layout\n"):]
    layout = layout[: layout.index("\n## ", 1)]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    tops = {path.split("/")[0] for path in tracked.splitlines() if "/" in path and not path.startswith(".")}
    for name in tops:
        assert re.search(rf"^{name}/\s", layout, flags=re.M), f"{name}/ is missing from the README's layout"
    packages = ("pipelines", "validation", "monitoring", "serving", "ops", "flows", "cli")
    for path in tracked.splitlines():  # every module of every package, at any depth
        module = path.rsplit("/", 1)[-1]
        if path.split("/")[0] in packages and module.endswith(".py") and module not in ("__init__.py", "__main__.py"):
            assert module in layout, f"{path} is missing from the README's layout"
