"""The dependency floors of pyproject.toml as pip constraints (`name==floor`), and a check that they are installed.

    python .ci/floors.py --exclude torch > floors.txt        # constraints for `pip install -c floors.txt ...`
    python .ci/floors.py --exclude torch --check             # exit 1 unless every floor is the installed version

One source of truth: `make test-min` installs exactly the `>=` floors of `[project].dependencies`.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def floors(pyproject: Path) -> dict[str, str]:
    """`{name: floor}` of every dependency with a `>=` bound."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    found = {}
    for requirement in dependencies:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", requirement)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parent.parent / "pyproject.toml")
    parser.add_argument("--exclude", action="append", default=[], help="a dependency to leave out (repeatable)")
    parser.add_argument("--check", action="store_true", help="check the installed versions instead of printing")
    args = parser.parse_args()
    pinned = {name: floor for name, floor in floors(args.pyproject).items() if name not in args.exclude}
    if not args.check:
        print("\n".join(f"{name}=={floor}" for name, floor in pinned.items()))
        return 0
    wrong = []
    for name, floor in pinned.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+")[0] != floor:
            wrong.append(f"{name}: floor {floor}, installed {installed}")
    if wrong:
        print("Not at the floors of pyproject.toml:\n  " + "\n  ".join(wrong), file=sys.stderr)
        return 1
    print("At the floors: " + ", ".join(f"{name} {floor}" for name, floor in pinned.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
