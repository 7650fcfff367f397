"""The README documents every environment variable the settings read (completeness)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_environment_variable_is_documented():
    sources = (ROOT / "api" / "settings.py").read_text() + (ROOT / "api" / "env.py").read_text()
    names = set(re.findall(r'env_\w+\(\s*"([A-Z_]+)"', sources))
    names |= set(re.findall(r'env_str\("([A-Z_]+)"', sources))
    names |= {"DATABASE_URL", "REDIS_URL", "CRUNCH_DATA_DIR", "CRUNCH_UUID_PREFIX"}
    readme = (ROOT / "README.md").read_text()
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert len(names) > 10
    assert not missing, f"README lacks: {missing}"
