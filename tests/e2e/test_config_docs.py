"""docs/configuration.md agrees with the code: the settings table is the one the definitions
make, every profile key and built-in agent type is there, and its example files load."""

from __future__ import annotations

import re
from pathlib import Path

from orchestra.actors.profiles import _FIELDS, BUILTIN, Profiles
from orchestra.transport.config import SERVE_SETTINGS, reference_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text()


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_settings_table_is_the_generated_one():
    match = re.search(r"<!-- settings:begin[^>]*-->\n(.*?)<!-- settings:end -->", CONFIGURATION, flags=re.S)
    assert match, "docs/configuration.md lost its settings markers"
    assert match.group(1) == reference_markdown(SERVE_SETTINGS), (
        "docs/configuration.md is out of date: paste `orchestra config --print-reference` between the markers")


def test_every_setting_is_in_the_reference():
    for s in SERVE_SETTINGS:
        assert f"`{s.name}`" in CONFIGURATION and f"`{s.env}`" in CONFIGURATION and s.flag in CONFIGURATION


def test_every_profile_key_is_documented():
    documented = set(re.findall(r"^\| (.*?) \|", CONFIGURATION, flags=re.M))
    keys = {key for cell in documented for key in re.findall(r"`([a-z_]+)`", cell)}
    assert _FIELDS <= keys, sorted(_FIELDS - keys)


def test_every_built_in_type_is_documented_as_it_is():
    rows = {line.split("|")[1].strip(" `"): line for line in CONFIGURATION.splitlines()
            if line.startswith("| `") and line.count("|") == 6}
    for name, profile in BUILTIN.items():
        assert name in rows, name
        row = rows[name]
        assert f"{profile.rate_per_second:g}/s, burst {profile.burst}" in row
        for follower in profile.next_agents:
            assert f"`{follower}`" in row
        assert ("spawn_agents" in row) == ("spawn_agents" in profile.permissions)
        assert not profile.command  # "none has a command", as the page says


def test_the_example_profiles_file_loads(tmp_path):
    (example,) = [b for b in _blocks(CONFIGURATION, "toml") if "[profiles." in b]
    path = tmp_path / "profiles.toml"
    path.write_text(example)
    profiles = Profiles.load(path)
    assert profiles.get("python-specialist").restart == "on-failure"
    assert profiles.get("python-specialist").context_globs == BUILTIN["python-specialist"].context_globs
    assert "spawn_agents" in profiles.get("release-manager").permissions
    assert profiles.get("anything-else").burst == 20


def test_the_example_project_table_is_a_valid_config_file(tmp_path):
    from orchestra.transport.config import ConfigError, read_file

    (example,) = [b for b in _blocks(CONFIGURATION, "toml") if b.startswith("[project]")]
    path = tmp_path / "c.toml"
    path.write_text(example)
    try:
        read_file(SERVE_SETTINGS, path)
    except ConfigError as exc:  # its paths are an operator's, not this machine's
        assert "not an existing directory" in str(exc)
