#!/usr/bin/env python3
"""Build collector's built-in sample fleet from the Postfix lab's output.

    python3 scripts/build_demo.py [LAB_DIR]   (default: tests/fixtures/lab)

Copies each lab host's root (etc/postfix/main.cf, var/log/...) into collector/demo/fleet/,
records the logs' original mtimes in a per-host manifest (git does not keep mtimes, and the
year of a syslog timestamp is read from its file's mtime), and writes the demo inventory.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "collector" / "demo"
MANIFEST = "collector-manifest.json"


def main(argv: list[str]) -> int:
    lab = Path(argv[1]) if len(argv) > 1 else REPO / "tests" / "fixtures" / "lab"
    expected = json.loads((lab / "expected.json").read_text())
    mtimes = json.loads((lab / "mtimes.json").read_text())
    fleet = DEMO / "fleet"
    if fleet.exists():
        shutil.rmtree(fleet)
    lines = [
        "# The built-in sample fleet: four Postfix hosts of a real relay chain (Postfix "
        + expected["lab"]["postfix_version"] + ").",
        "# Each host is a directory standing for its filesystem (transport = \"local\").",
        "",
        "[defaults]",
        'transport = "local"',
        'timezone = "UTC"',
        "",
    ]
    for name, info in expected["hosts"].items():
        src = lab / name
        dst = fleet / name
        files: dict[str, dict[str, float | int]] = {}
        for path in sorted(src.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(src)
            if rel.parts[0] not in ("etc", "var"):
                continue
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            key = f"{name}/{rel.as_posix()}"
            if key in mtimes:
                files["/" + rel.as_posix()] = {"mtime": mtimes[key], "size": path.stat().st_size}
        (dst / MANIFEST).write_text(
            json.dumps({"host": name, "files": files}, indent=2) + "\n", encoding="utf-8"
        )
        lines += [
            "[[hosts]]",
            f'name = "{name}"',
            f'root = "fleet/{name}"',
            f'aliases = ["{info["fqdn"]}", "{info["ip"]}"]',
            "",
        ]
    (DEMO / "inventory.toml").write_text("\n".join(lines), encoding="utf-8")
    scenarios = {s["name"]: s for s in expected["scenarios"]}
    (DEMO / "demo.json").write_text(
        json.dumps(
            {
                "postfix_version": expected["lab"]["postfix_version"],
                "search_to": scenarios["multi_split"]["recipients"][0],
                "trace": scenarios["multi_split"]["message_id"],
                "trace_bounce": scenarios["unknown_user"]["message_id"],
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"demo fleet written to {fleet.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
