from polyarch.engine.image import ImageState, apply_meta, image_config_json
from polyarch.platform import Platform

T = "2026-01-01T00:00:00Z"


def state() -> ImageState:
    s = ImageState(Platform.parse("linux/arm64"))
    s.config = {"Env": ["PATH=/bin", "A=1"], "Cmd": ["bash"]}
    return s


def test_env_keeps_declaration_order_and_replaces_in_place() -> None:
    s = state()
    apply_meta(s, {"instruction": "ENV", "env": [], "pairs": [["Z", "1"], ["PATH", "/x:/bin"]]}, T)
    assert s.config["Env"] == ["PATH=/x:/bin", "A=1", "Z=1"]  # as BuildKit's addEnv
    assert s.history[-1] == {"created": T, "created_by": "ENV Z=1 PATH=/x:/bin",
                             "comment": "buildkit.dockerfile.v0", "empty_layer": True}  # fmt: skip


def test_shell_form_uses_the_current_shell() -> None:
    s = state()
    apply_meta(s, {"instruction": "CMD", "args": ["echo hi"], "json": False,
                   "shell": ["/bin/bash", "-c"]}, T)  # fmt: skip
    assert s.config["Cmd"] == ["/bin/bash", "-c", "echo hi"]


def test_entrypoint_resets_inherited_cmd_only() -> None:
    s = state()
    apply_meta(s, {"instruction": "ENTRYPOINT", "args": ["/e"], "json": True}, T)
    assert "Cmd" not in s.config and s.config["Entrypoint"] == ["/e"]
    s2 = state()
    apply_meta(s2, {"instruction": "CMD", "args": ["x"], "json": True}, T)
    apply_meta(s2, {"instruction": "ENTRYPOINT", "args": ["/e"], "json": True}, T)
    assert s2.config["Cmd"] == ["x"]


def test_healthcheck_and_expose_and_config_document() -> None:
    s = state()
    apply_meta(s, {"instruction": "HEALTHCHECK", "args": ["CMD", "curl x"], "json": False,
                   "flags": {"interval": "1m30s", "retries": "3"}}, T)  # fmt: skip
    assert s.config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "curl x"],
        "Interval": 90_000_000_000,
        "Retries": 3,
    }
    apply_meta(s, {"instruction": "EXPOSE", "args": ["80", "53/udp"]}, T)
    assert s.config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    doc = image_config_json(s, T).decode()
    assert doc.startswith('{"architecture":"arm64","os":"linux","created":')
