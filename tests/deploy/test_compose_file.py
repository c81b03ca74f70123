"""deploy/compose.yml, read structurally (no container engine or YAML library here).

The file keeps to block-style YAML: mappings, `- item` lists and plain or quoted scalars, which
the small reader below understands; anything fancier fails the test rather than being misread.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.deploy.test_container_recipe import STEPS, healthcheck_command
from tests.support import start_host

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yml"


def read_block_yaml(text: str):
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        assert "\t" not in raw, f"line {number}: tab"
        content = re.sub(r"\s+#.*$", "", raw.rstrip())
        lines.append((len(raw) - len(raw.lstrip(" ")), content.strip(), number))
    value, end = _block(lines, 0, 0)
    assert end == len(lines), f"line {lines[end][2]}: unexpected indentation"
    return value


def _block(lines, i, indent):
    if i < len(lines) and lines[i][1].startswith("- "):
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            items.append(_scalar(lines[i][1][2:], lines[i][2]))
            i += 1
        return items, i
    mapping = {}
    while i < len(lines) and lines[i][0] == indent:
        _, content, number = lines[i]
        key, colon, rest = content.partition(":")
        assert colon and key and not key.startswith("- "), f"line {number}: {content!r}"
        assert key not in mapping, f"line {number}: {key} twice"
        i += 1
        if rest.strip():
            mapping[key] = _scalar(rest.strip(), number)
        elif i < len(lines) and lines[i][0] > indent:
            mapping[key], i = _block(lines, i, lines[i][0])
        elif i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            mapping[key], i = _block(lines, i, indent)  # a list need not be indented
        else:
            mapping[key] = None
    return mapping, i


def _scalar(text: str, number: int) -> str:
    if text[:1] in "\"'":
        assert len(text) > 1 and text[-1] == text[0], f"line {number}: unterminated {text}"
        return text[1:-1]
    assert text[:1] not in "[{&*!|>", f"line {number}: not plain block YAML: {text}"
    return text


DOC = read_block_yaml(COMPOSE.read_text())


def test_one_service_built_from_the_containerfile():
    assert list(DOC["services"]) == ["withcache"], DOC["services"]
    service = DOC["services"]["withcache"]
    build = service["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
        REPO / "deploy" / "Containerfile"
    )
    assert service["restart"] in ("unless-stopped", "always", "on-failure"), service
    assert "3000:3000" in service["ports"] or any(p.endswith(":3000") for p in service["ports"]), (
        service["ports"]
    )


def test_data_lives_in_a_named_volume():
    service = DOC["services"]["withcache"]
    mounts = dict(v.split(":", 1) for v in service["volumes"])
    volume = next(
        (name for name, target in mounts.items() if target.split(":")[0] == "/data"), None
    )
    assert volume is not None, service["volumes"]
    assert not volume.startswith(("/", ".", "~")), f"{volume} is a bind mount, not a named volume"
    assert volume in DOC["volumes"], DOC.get("volumes")


def test_admin_password_comes_from_the_environment_only():
    service = DOC["services"]["withcache"]
    environment = service["environment"]
    if isinstance(environment, dict):
        value = environment["WITHCACHE_ADMIN_PASSWORD"]
        assert re.fullmatch(r"\$\{WITHCACHE_ADMIN_PASSWORD(:?[-?][^}]*)?\}", value), value
    else:
        names = [e for e in environment if e.split("=", 1)[0] == "WITHCACHE_ADMIN_PASSWORD"]
        # `- NAME` without `=` passes the variable through from where compose runs.
        assert names == ["WITHCACHE_ADMIN_PASSWORD"], environment
    assert _literal_secrets(DOC) == []


def _literal_secrets(node, key: str = "") -> list[str]:
    """Secret-looking names given a value that is not a ${VARIABLE} (comments are not read)."""
    secret = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)
    if isinstance(node, dict):
        return [hit for k, v in node.items() for hit in _literal_secrets(v, k)]
    if isinstance(node, list):
        return [hit for item in node for hit in _literal_secrets(item, key)]
    if node is None:
        return []
    name, eq, value = node.partition("=")
    if eq and secret.search(name) and not value.startswith("${"):
        return [node]
    if secret.search(key) and not node.startswith("${"):
        return [f"{key}: {node}"]
    return []


def test_the_reader_refuses_what_it_does_not_understand():
    assert _literal_secrets({"environment": ["ADMIN_PASSWORD=hunter2"]})
    assert _literal_secrets({"environment": {"API_TOKEN": "abc"}})
    assert not _literal_secrets({"environment": {"API_TOKEN": "${API_TOKEN:?}"}})
    for text in ("a: {b: 1}\n", "a:\n  - [1, 2]\n", "a: 1\n  b: 2\n", "a: 1\na: 2\n"):
        try:
            read_block_yaml(text)
        except AssertionError:
            continue
        raise AssertionError(f"read {text!r} without complaint")


def test_the_service_has_the_containerfiles_health_check():
    """podman build writes OCI images, which drop HEALTHCHECK: compose must carry its own."""
    check = DOC["services"]["withcache"]["healthcheck"]
    test = check["test"]
    assert isinstance(test, list) and test[0] == "CMD", test
    _, command = healthcheck_command(STEPS)
    assert test[1:] == shlex.split(command), (test, command)
    assert {"interval", "timeout", "retries"} <= set(check), check


def test_the_compose_health_check_passes_against_a_host_and_fails_without_one(tmp_path):
    argv = DOC["services"]["withcache"]["healthcheck"]["test"][1:]
    assert argv[0] == "python"
    host = start_host(tmp_path / "data")
    try:
        port = host.url.rsplit(":", 1)[1]
        run = [
            sys.executable,
            *(a.replace("127.0.0.1:3000", f"127.0.0.1:{port}") for a in argv[1:]),
        ]
        assert subprocess.run(run, capture_output=True, timeout=30).returncode == 0
    finally:
        host.stop()
    assert subprocess.run(run, capture_output=True, timeout=30).returncode != 0
