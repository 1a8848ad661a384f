"""Reading bake files as buildx does: HCL and JSON evaluation (variables, functions, matrix,
block references), inheritance and merging, --set, target: links, Compose files, and the JSON
--print writes. Pure: no build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from polyarch.bake.definition import BakeError, parse_overrides, read_targets
from polyarch.bake.files import BakeFile, load

BUILTINS = {"BAKE_CMD_CONTEXT": "cwd://", "BAKE_LOCAL_PLATFORM": "linux/amd64"}


def printed(
    files: dict[str, str],
    targets: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """What `bake --print TARGETS` prints for these files."""
    bake_files = [BakeFile(name, text, Path("/project")) for name, text in files.items()]
    parsed = load(bake_files, Path("/project"), env or {}, BUILTINS)
    resolved = read_targets(parsed.config, list(targets),
                            parse_overrides(parsed.config, list(overrides), env or {}))  # fmt: skip
    data: dict[str, Any] = json.loads(resolved.print_json())
    return data


def test_variables_defaults_environment_and_types() -> None:
    hcl = """
variable "TAG" { default = "latest" }
variable "DEBUG" { default = false }
variable "PLATFORMS" {
  type = list(string)
  default = ["linux/amd64"]
}
variable "PORTS" { type = map(number) }
target "default" {
  tags = ["app:${TAG}"]
  args = { DEBUG = DEBUG, FIRST = PLATFORMS[0], HTTP = try(PORTS.http, "none") }
  platforms = PLATFORMS
}
"""
    target = printed({"docker-bake.hcl": hcl})["target"]["default"]
    assert target["tags"] == ["app:latest"]
    assert target["args"] == {"DEBUG": "false", "FIRST": "linux/amd64", "HTTP": "none"}
    env = {"TAG": "1.2", "DEBUG": "true", "PLATFORMS": "linux/arm64,linux/s390x",
           "PORTS_JSON": '{"http": 8080}'}  # fmt: skip
    target = printed({"docker-bake.hcl": hcl}, env=env)["target"]["default"]
    assert target["tags"] == ["app:1.2"]
    assert target["args"] == {"DEBUG": "true", "FIRST": "linux/arm64", "HTTP": "8080"}
    assert target["platforms"] == ["linux/arm64", "linux/s390x"]
    with pytest.raises(BakeError, match="failed to parse DEBUG as bool"):
        printed({"docker-bake.hcl": hcl}, env={"DEBUG": "maybe"})


def test_validation_cycles_and_unknown_names() -> None:
    validated = """
variable "PORT" {
  default = 80
  validation {
    condition = PORT > 0 && PORT < 65536
    error_message = "PORT must be a port, not ${PORT}."
  }
}
target "default" { args = { PORT = PORT } }
"""
    assert printed({"b.hcl": validated})["target"]["default"]["args"] == {"PORT": "80"}
    with pytest.raises(BakeError, match="PORT must be a port, not 70000"):
        printed({"b.hcl": validated}, env={"PORT": "70000"})
    with pytest.raises(BakeError, match="variable cycle not allowed for A"):
        printed({"b.hcl": 'variable "A" { default = B }\nvariable "B" { default = A }\n'
                          'target "default" { args = { X = A } }'})  # fmt: skip
    with pytest.raises(BakeError, match=r'b\.hcl:1: variable "NOPE" does not exist'):
        printed({"b.hcl": 'target "default" { tags = [NOPE] }'})
    with pytest.raises(BakeError, match=r"b\.hcl:\d+: invalid HCL"):
        printed({"b.hcl": 'target "default" {\n  tags = [\n'})


def test_functions_of_the_standard_library_and_the_file() -> None:
    hcl = """
function "tag" {
  params = [name, version]
  result = "${lower(name)}:${version}"
}
function "all" {
  params = [first]
  variadic_params = rest
  result = concat([first], rest)
}
target "default" {
  tags = [tag("App", "1.0"), join("-", all("a", "b", "c"))]
  args = {
    SUM = add(1, 2.5)
    FMT = format("%s-%03d", "build", 7)
    SEMVER = semvercmp("1.4.2", ">= 1.2, < 2")
    UNIX = formattimestamp("YYYY", 0)
    SANE = sanitize("feature/x.y")
  }
}
"""
    target = printed({"b.hcl": hcl})["target"]["default"]
    assert target["tags"] == ["app:1.0", "a-b-c"]
    assert target["args"] == {"FMT": "build-007", "SANE": "feature_x_y", "SEMVER": "true",
                              "SUM": "3.5", "UNIX": "1970"}  # fmt: skip


def test_inherits_merges_maps_and_replaces_lists() -> None:
    hcl = """
target "_common" {
  args = { GO_VERSION = "1.22", KEEP = "1" }
  labels = { "org.opencontainers.image.source" = "https://example.org/app" }
  tags = ["app:common"]
  secret = ["id=token,env=TOKEN"]
}
target "release" {
  inherits = ["_common"]
  args = { GO_VERSION = "1.23" }
  tags = ["app:release"]
  secret = ["id=npm,src=.npmrc"]
  platforms = ["linux/amd64", "linux/arm64"]
}
"""
    target = printed({"b.hcl": hcl}, ("release",))["target"]["release"]
    assert target["args"] == {"GO_VERSION": "1.23", "KEEP": "1"}
    assert target["labels"] == {"org.opencontainers.image.source": "https://example.org/app"}
    assert target["tags"] == ["app:release"]
    assert target["secret"] == [{"id": "token", "env": "TOKEN"}, {"id": "npm", "src": ".npmrc"}]
    assert "inherits" not in target


def test_matrix_names_and_its_group() -> None:
    hcl = """
target "app" {
  name = "app-${tgt}-${replace(ver, ".", "_")}"
  matrix = {
    tgt = ["release", "debug"]
    ver = ["1.0", "2.0"]
  }
  target = tgt
  args = { VERSION = ver }
}
"""
    data = printed({"b.hcl": hcl}, ("app",))
    names = ["app-debug-1_0", "app-debug-2_0", "app-release-1_0", "app-release-2_0"]
    assert sorted(data["group"]["app"]["targets"]) == names
    assert data["target"]["app-debug-2_0"]["target"] == "debug"
    assert data["target"]["app-debug-2_0"]["args"] == {"VERSION": "2.0"}
    with pytest.raises(BakeError, match="makes the name 'x' more than once"):
        printed({"b.hcl": 'target "a" {\n name = "x"\n matrix = { v = [1, 2] }\n}'})


def test_block_references_and_groups() -> None:
    hcl = """
group "default" { targets = ["web", "all"] }
group "all" { targets = ["api", "web"] }
target "web" { tags = ["web:1"] }
target "api" {
  tags = [for t in target.web.tags : replace(t, "web", "api")]
  dockerfile = "${target.web.dockerfile == null ? "Api" : "x"}.Dockerfile"
}
"""
    data = printed({"b.hcl": hcl})
    assert data["group"]["default"]["targets"] == ["all", "web"]
    assert data["group"]["all"]["targets"] == ["api", "web"]
    assert data["target"]["api"]["tags"] == ["api:1"]
    assert data["target"]["api"]["dockerfile"] == "Api.Dockerfile"


def test_set_overrides() -> None:
    hcl = """
target "app" {
  tags = ["app:1"]
  platforms = ["linux/amd64"]
  args = { A = "1" }
}
target "worker" {
  tags = ["worker:1"]
}
"""
    overrides = ("*.platform=linux/arm64", "app.tags+=app:latest", "app.args.B=2",
                 "app.args.FROM_ENV", "worker.push=true", "app.no-cache=true",
                 "app.output=type=local,dest=out", "app.push=true")  # fmt: skip
    data = printed({"b.hcl": hcl}, ("app", "worker"), {"FROM_ENV": "e"}, overrides)
    app, worker = data["target"]["app"], data["target"]["worker"]
    assert app["platforms"] == ["linux/arm64"] and worker["platforms"] == ["linux/arm64"]
    assert app["tags"] == ["app:1", "app:latest"]
    assert app["args"] == {"A": "1", "B": "2", "FROM_ENV": "e"}
    assert app["no-cache"] is True
    assert worker["output"] == [{"push": "true", "type": "image"}]
    # As buildx: push adds an image output only where every output is a docker one.
    assert app["output"] == [{"dest": "out", "type": "local"}]
    with pytest.raises(BakeError, match="could not find any target matching 'nope'"):
        printed({"b.hcl": hcl}, overrides=("nope.tags=x",))
    with pytest.raises(BakeError, match="unknown key: bogus"):
        printed({"b.hcl": hcl}, ("app",), overrides=("app.bogus=1",))


def test_target_links_pull_in_the_other_target() -> None:
    hcl = """
target "base" {
  dockerfile = "base.Dockerfile"
  platforms = ["linux/amd64", "linux/arm64"]
}
target "app" {
  contexts = { base = "target:base" }
  platforms = ["linux/arm64"]
}
"""
    data = printed({"b.hcl": hcl}, ("app",))
    assert data["group"]["default"]["targets"] == ["app"]
    assert data["target"]["base"]["output"] == [{"type": "cacheonly"}]
    with pytest.raises(BakeError, match="cannot link to itself"):
        printed({"b.hcl": 'target "a" { contexts = { x = "target:a" } }'}, ("a",))
    with pytest.raises(BakeError, match="not a subset"):
        printed({"b.hcl": hcl.replace('["linux/arm64"]', '["linux/arm64", "linux/s390x"]')},
                ("app",))  # fmt: skip


def test_json_files_are_templates_too() -> None:
    data = printed({"docker-bake.json": json.dumps({
        "variable": {"TAG": {"default": "1.0"}},
        "group": {"default": {"targets": ["app"]}},
        "target": {"app": {"tags": ["app:${TAG}", "literal:$${TAG}"],
                           "args": {"N": 3}, "output": [{"type": "image", "push": "true"}]}},
    })})  # fmt: skip
    app = data["target"]["app"]
    assert app["tags"] == ["app:1.0", "literal:${TAG}"]
    assert app["args"] == {"N": "3"}
    assert app["output"] == [{"push": "true", "type": "image"}]


def test_the_print_escapes_and_orders_as_buildx() -> None:
    hcl = r"""
target "default" {
  dockerfile-inline = "FROM alpine\nRUN echo $${HOME} <&>"
  platforms = ["linux/amd64"]
  context = "./sub/../app/"
  cache-from = ["user/app:cache", "type=local,src=/tmp/c"]
  ssh = ["default", "key=/k1,/k2"]
}
"""
    text = json.dumps(printed({"b.hcl": hcl}))
    target = printed({"b.hcl": hcl})["target"]["default"]
    assert list(target) == ["context", "dockerfile", "dockerfile-inline", "cache-from", "ssh",
                            "platforms"]  # fmt: skip
    assert target["context"] == "app"
    assert target["dockerfile-inline"] == "FROM alpine\nRUN echo $${HOME} <&>"
    assert target["cache-from"] == [{"ref": "user/app:cache", "type": "registry"},
                                    {"src": "/tmp/c", "type": "local"}]  # fmt: skip
    assert target["ssh"] == [{"id": "default"}, {"id": "key", "paths": ["/k1", "/k2"]}]
    assert "\\u003c\\u0026\\u003e" not in text  # json.dumps of the parsed output, not raw


def test_compose_services_with_x_bake() -> None:
    compose = """
services:
  web:
    image: registry.lan/web:${TAG:-dev}
    build:
      context: ./web
      dockerfile: web.Dockerfile
      args:
        - NODE_ENV=production
        - FROM_SERVICE
      labels:
        team: front
      target: runtime
      x-bake:
        platforms: linux/amd64 linux/arm64
        tags: [registry.lan/web:latest]
        output: type=image,push=true
    environment:
      FROM_SERVICE: yes-it-is
  api.v2:
    build: ./api
  db:
    image: postgres:16
"""
    data = printed({"compose.yaml": compose}, env={"TAG": "1.0"})
    assert data["group"]["default"]["targets"] == ["api_v2", "web"]
    web = data["target"]["web"]
    assert web["context"] == "web" and web["dockerfile"] == "web.Dockerfile"
    assert web["args"] == {"FROM_SERVICE": "yes-it-is", "NODE_ENV": "production"}
    assert web["labels"] == {"team": "front"}
    assert web["tags"] == ["registry.lan/web:latest"]
    assert web["platforms"] == ["linux/amd64", "linux/arm64"]
    assert web["target"] == "runtime"
    assert data["target"]["api_v2"]["context"] == "api"
    without = printed({"compose.yaml": compose.replace("tags: [registry.lan/web:latest]",
                                                       "no-cache: true")},
                      env={"TAG": "1.0"})  # fmt: skip
    assert without["target"]["web"]["tags"] == ["registry.lan/web:1.0"]


def test_files_merge_in_order() -> None:
    data = printed({
        "docker-bake.hcl": 'variable "V" { default = "one" }\ntarget "default" {\n'
                           '  tags = ["a:${V}"]\n  args = { A = "1" }\n}\n',
        "docker-bake.override.hcl": 'V = "two"\ntarget "default" { args = { B = "2" } }\n',
    })  # fmt: skip
    target = data["target"]["default"]
    assert target["tags"] == ["a:two"]
    assert target["args"] == {"A": "1", "B": "2"}
