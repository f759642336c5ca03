"""Files that may hold secrets: listed as withheld paths, their content never in an answer,
whatever the task names, the agent type or the budget (PROTOCOL.md, context)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from orchestra.actors.context.engine import ContextEngine
from orchestra.actors.context.ranking import Signals
from orchestra.actors.context.secrets import WITHHELD_REASON, SecretPolicy, holds_private_key
from orchestra.actors.profiles import Profiles

KEY_BLOCK = "-----BEGIN {}PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC{}\n-----END {}PRIVATE KEY-----\n"

#: path -> content; every secret holds its own word ``zqsecret<N>`` and nothing else of it may
#: appear in an answer
SECRETS = {
    ".env": "API_TOKEN=zqsecret1\n",
    ".env.production": "DATABASE_URL=postgres://app:zqsecret2@db/app\n",
    ".netrc": "machine api.example.com login deploy password zqsecret3\n",
    "config/credentials.json": '{"client_secret": "zqsecret4"}\n',
    "deploy/id_rsa": KEY_BLOCK.format("OPENSSH ", "zqsecret5", "OPENSSH "),
    "certs/server.key": KEY_BLOCK.format("", "zqsecret6", ""),
    "certs/ca.pem": KEY_BLOCK.format("EC ", "zqsecret7", "EC "),
    ".npmrc": "//registry.npmjs.org/:_authToken=zqsecret8\n",
    ".pypirc": "[pypi]\nusername = __token__\npassword = pypi-zqsecret9\n",
    ".pgpass": "db:5432:app:app:zqsecret10\n",
    "deploy/keystore.p12": "zqsecret11 not really binary\n",
    "config/credentials-prod.json": '{"key": "zqsecret12"}\n',
    # named like code, holds a private key: withheld by its content
    "app/bootstrap.py": "SIGNING_KEY = '''\n" + KEY_BLOCK.format("RSA ", "zqsecret13", "RSA ") + "'''\n",
    # withheld by the server's own setting (``--context-withhold 'config/*.yaml'``)
    "config/prod.yaml": "password: zqsecret14\n",
}
CODE = {
    "app/settings.py": "import os\n\ndef load_settings():\n    '''Read .env.production and config/credentials.json.'''\n"
                       "    return open('.env.production').read()\n",
    "app/deploy.py": "def deploy():\n    '''Uses deploy/id_rsa and certs/server.key to sign.'''\n    return 'ok'\n",
    "README.md": "# app\nSecrets live in .env, .netrc and certs/.\n",
    "pyproject.toml": '[project]\nname = "app"\ndependencies = ["httpx"]\n',
    "config/dev.yaml": "debug: true\n",
}
EXTRA = ("config/*.yaml", "!config/dev.yaml")
TASKS = [
    "",
    "Fix loading of .env.production, .netrc, config/credentials.json and deploy/id_rsa",
    "Rotate the keys in certs/server.key certs/ca.pem deploy/keystore.p12 and app/bootstrap.py",
    ".env .npmrc .pypirc .pgpass config/credentials-prod.json config/prod.yaml",
    'Traceback (most recent call last):\n  File "app/settings.py", line 5, in load_settings\n'
    '  File ".env.production", line 1\n  File "config/prod.yaml", line 1\nKeyError: API_TOKEN zqsecret',
    "env production netrc credentials id rsa server key ca pem keystore bootstrap prod yaml password token",
]
AGENT_TYPES = [*Profiles().by_type, "no-profile-agent"]


def make_careless_repo(root: Path) -> Path:
    for rel, text in {**SECRETS, **CODE}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-qm", "SEC-1 add deploy keys and settings"], check=True, env=env)
    # an uncommitted change to a secret, so it is also among the uncommitted changes
    (root / ".env").write_text("API_TOKEN=zqsecret1\nOTHER=zqsecret1\n")
    return root


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> ContextEngine:
    engine = ContextEngine(make_careless_repo(tmp_path_factory.mktemp("careless")), withhold=EXTRA)
    engine.refresh()
    return engine


def signals_of(agent_type: str) -> Signals:
    profile = Profiles().get(agent_type)
    prefer = "test" if "test" in agent_type else "doc" if "doc" in agent_type else None
    return Signals(globs=profile.context_globs, keywords=profile.context_keywords, prefer_kind=prefer)


def test_the_rules():
    policy = SecretPolicy(EXTRA)
    for rel in SECRETS:
        if rel != "app/bootstrap.py":
            assert policy.withholds_path(rel), rel
    for rel in ("sub/dir/.env.local", "a/id_ed25519", "x.pfx", "home/.pgpass", "keys/credentials.json"):
        assert policy.withholds_path(rel), rel
    for rel in CODE:
        assert not policy.withholds_path(rel), rel
    assert not policy.withholds_path("deploy/id_rsa.pub")  # a public key is no secret
    assert not policy.withholds_path("src/environment.py")
    assert not SecretPolicy().withholds_path("config/prod.yaml")  # only by the setting
    assert holds_private_key(SECRETS["app/bootstrap.py"].encode())
    assert holds_private_key(b"x\n-----BEGIN PGP PRIVATE KEY BLOCK-----\n")
    assert not holds_private_key(b"-----BEGIN PUBLIC KEY-----\n-----BEGIN CERTIFICATE-----\n")


def test_secret_words_are_not_indexed(engine):
    index = engine.index
    assert not [t for t in index.postings if "zqsecret" in t]
    withheld = {p for p, f in index.files.items() if f.withheld}
    assert withheld == set(SECRETS)


@pytest.mark.parametrize("agent_type", AGENT_TYPES)
@pytest.mark.parametrize("max_bytes", [4096, 65536, 4_194_304])
def test_no_secret_reaches_an_answer(engine, agent_type, max_bytes):
    signals = signals_of(agent_type)
    previous = [{"id": "r1", "agent_id": "a", "result": {"status": "success",
                                                         "files": ["deploy/id_rsa", ".env", "config/prod.yaml"]}}]
    for task in TASKS:
        body = engine.build("SEC-1", agent_type, task, max_bytes, previous, signals)
        raw = orjson.dumps(body)
        assert b"zqsecret1" not in raw.replace(b"KeyError: API_TOKEN zqsecret", b"")
        for n in range(2, 15):
            assert f"zqsecret{n}".encode() not in raw, (agent_type, max_bytes, task)
        assert b"PRIVATE KEY-----\\nMII" not in raw
        for record in body["context"]["relevant_files"]:
            if record["path"] in SECRETS:
                assert record["withheld"] is True and record["inlined"] is False
                assert record["content"] == "" and record["checksum"] is None
                assert record["reason"] == WITHHELD_REASON
        if task and max_bytes >= 65536:  # the files the task names are listed, as withheld paths
            listed = {r["path"] for r in body["context"]["relevant_files"] if r.get("withheld")}
            named = {p for p in SECRETS if p in task}
            assert named <= listed, (agent_type, task, named - listed)


def test_a_file_that_becomes_a_secret_after_indexing_is_withheld(engine):
    root = engine.root
    path = root / "app/deploy.py"
    before = path.read_text()
    try:
        path.write_text(before + "KEY = '''" + KEY_BLOCK.format("", "zqsecret99", "") + "'''\n")
        # not refreshed: the index still holds the old words, the answer reads the new bytes
        body = engine.build("SEC-2", "python-specialist", "app/deploy.py deploy", 262144, [], Signals())
        assert b"zqsecret99" not in orjson.dumps(body)
        record = next(r for r in body["context"]["relevant_files"] if r["path"] == "app/deploy.py")
        assert record["withheld"] is True
    finally:
        path.write_text(before)


def test_the_cold_index_read_by_a_child_process_withholds_the_same(tmp_path):
    root = make_careless_repo(tmp_path / "repo")
    child, here = ContextEngine(root, withhold=EXTRA), ContextEngine(root, scan_in_child=False, withhold=EXTRA)
    child.refresh()
    here.refresh()
    assert {p for p, f in child.index.files.items() if f.withheld} == set(SECRETS)
    assert child.index.files == here.index.files


def test_code_that_only_mentions_secret_files_is_still_inlined(engine):
    body = engine.build("SEC-3", "python-specialist", "load_settings", 262144, [], Signals())
    record = next(r for r in body["context"]["relevant_files"] if r["path"] == "app/settings.py")
    assert "load_settings" in record["content"] and not record.get("withheld")


def test_a_link_with_an_innocent_name_to_a_secret_is_withheld(tmp_path):
    root = make_careless_repo(tmp_path / "repo")
    os.symlink(".env.production", root / "settings.txt")
    os.symlink("../certs/server.key", root / "app/tls.txt")
    engine = ContextEngine(root, scan_in_child=False, withhold=EXTRA)
    engine.refresh()
    body = engine.build("SEC-4", "python-specialist", "settings.txt app/tls.txt", 262144, [], Signals())
    raw = orjson.dumps(body)
    assert b"zqsecret2" not in raw and b"zqsecret6" not in raw
    listed = {r["path"]: r for r in body["context"]["relevant_files"]}
    assert listed["settings.txt"]["withheld"] is True and listed["app/tls.txt"]["withheld"] is True
    assert not [t for t in engine.index.postings if "zqsecret" in t]  # nor indexed through the link
    assert engine.index.files["settings.txt"].withheld


_TASK_PARTS = [*SECRETS, *CODE, "password", "token", "key", "secret", "private", "env", "production", "BEGIN",
               "credentials", "id_rsa", "ca.pem", "Traceback", 'File "', '", line 3', "\n", " ", "/", ".", "`",
               "API_TOKEN", "load_settings", "deploy", "é", "\u212a", "\u0130", "fix", "rotate"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task=st.lists(st.sampled_from(_TASK_PARTS), max_size=12).map(" ".join),
       agent_type=st.sampled_from(AGENT_TYPES), max_bytes=st.integers(600, 300_000),
       named=st.lists(st.sampled_from([*SECRETS, *CODE]), max_size=3))
def test_no_task_budget_or_agent_type_gets_a_secret(engine, task, agent_type, max_bytes, named):
    # whatever the task says, whatever an earlier result named, whatever the budget: no
    # secret's content, and an answer within its budget (or the budget refused, CTX_002)
    from orchestra.actors.errors import TooLarge

    previous = [{"id": "r1", "agent_id": "a", "result": {"status": "success", "files": named}}] if named else []
    try:
        body = engine.build("SEC-9", agent_type, task, max_bytes, previous, signals_of(agent_type))
    except TooLarge:
        assert max_bytes < 4096
        return
    raw = orjson.dumps(body)
    assert len(raw) == body["total_size_bytes"] <= max_bytes
    assert b"zqsecret" not in raw and b"PRIVATE KEY-----\\nMII" not in raw
    for record in body["context"]["relevant_files"]:
        if record["path"] in SECRETS:
            assert record["withheld"] is True and record["content"] == ""
