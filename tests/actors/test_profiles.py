"""Agent profiles: the built-in types, and profiles files (TOML or JSON) with errors that name
file, line and key."""

from __future__ import annotations

import pytest
from orchestra.actors.profiles import ProfileError, Profiles


def test_profiles_toml_overrides_and_adds(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        '[profiles.python-specialist]\nrate_per_second = 2\nburst = 3\nnext_agents = ["security-auditor"]\n\n'
        '[profiles.data-scientist]\npermissions = ["read_context"]\ncommand = ["python", "-m", "agent"]\n'
    )
    profiles = Profiles.load(path)
    py = profiles.get("python-specialist")
    assert (py.rate_per_second, py.burst, py.next_agents) == (2.0, 3, ("security-auditor",))
    assert py.permissions == {"read_context", "write_results", "publish_events"}  # kept
    ds = profiles.get("data-scientist")
    assert ds.permissions == {"read_context"} and ds.command == ("python", "-m", "agent")
    assert profiles.get("never-heard-of").permissions == {"read_context", "write_results", "publish_events"}


def test_profiles_json_in_the_seed_shape(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('[{"agent_type": "go-specialist", "model": "m1", "capabilities": ["go"],'
                    ' "context_requirements": ["**/*.go", "concurrency"], "event_subscriptions": ["x"],'
                    ' "permissions": ["read_context", "spawn_agents"], "authority_level": "high"}]')
    go = Profiles.load(path).get("go-specialist")
    assert go.model == "m1" and go.context_globs == ("**/*.go",) and go.context_keywords == ("concurrency",)
    assert go.permissions == {"read_context", "spawn_agents"} and go.authority_level == "high"


@pytest.mark.parametrize(
    "text, suffix, message",
    [
        ('[profiles.x]\nburst = "many"\n', ".toml", "line 2: [profiles.x]: burst: must be an integer"),
        ('[profiles.x]\ncolour = "red"\n', ".toml", "colour: unknown key"),
        ('[profiles.x]\npermissions = ["admin"]\n', ".toml", "'admin' comes only from a token"),
        ('[profiles.x]\npermissions = ["fly"]\n', ".toml", "unknown permission 'fly'"),
        ('[{"agent_type": "x", "rate_per_second": 0}]', ".json", "entry #1: rate_per_second: must be a number > 0"),
        ('[{"agent_type": "x",}]', ".json", "line 1"),
        ('{"nope": 1}', ".json", "expected a list of profiles"),
    ],
)
def test_profile_errors_name_file_line_and_key(tmp_path, text, suffix, message):
    path = tmp_path / f"profiles{suffix}"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        Profiles.load(path)
    assert str(path) in str(info.value) and message in str(info.value)
