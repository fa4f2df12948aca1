"""README.md's two commands at the top are the ones CI runs, and every config option it names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_install_and_test_commands():
    install, run, test = first_commands()
    assert run == "dlopt train"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test in ci


def test_every_group_option_in_the_readme_table_exists():
    table = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `")]
    assert len(table) >= 10
    for line in table:
        group = line.split("`")[1]
        options = re.findall(r"`([a-z0-9_]+)`", line.split("|")[2])
        for option in options:
            assert (ROOT / "conf" / group / f"{option}.yaml").is_file(), f"README names {group}={option}"
