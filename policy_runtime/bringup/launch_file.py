"""ROS 2 YAML launch files, read without the ``launch`` package.

``ros2 launch`` needs a full ROS 2 install; ``prt launch`` brings up the same graph from the same
file where only the rclpy wheels exist. This module reads the subset of the YAML launch format
the project's files use and resolves it into the processes to start:

- ``arg`` (``name``, ``default``, ``description``), overridden by ``name:=value`` arguments;
- ``let`` (``name``, ``value``): a variable set in the file;
- ``set_env`` (``name``, ``value``): an environment variable for every process;
- ``node`` (``pkg``, ``exec``, ``name``, ``namespace``, ``output``, ``on_exit: shutdown``,
  ``param``: ``{name, value}`` or ``{from: params.yaml}``, ``remap``: ``{from, to}``,
  ``ros_args``);
- ``include`` (``file``, ``arg``: ``{name, value}``): another launch file, with arguments;
- the attributes ``if`` / ``unless`` on any of them;
- substitutions ``$(var NAME)``, ``$(env NAME [DEFAULT])``, ``$(find-pkg-share PKG)``,
  ``$(not X)``, ``$(and X Y)``, ``$(or X Y)``, ``$(equals X Y)``, nested.

Anything else (``$(eval ...)`` above all: it runs Python) is refused with the file and the
entry named, so a file never means one thing here and another under ``ros2 launch``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_runtime.validation import read_yaml_mapping

TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")
ENTRY_KINDS = ("arg", "let", "set_env", "node", "include")


class LaunchFileError(ValueError):
    """A launch file this reader cannot or will not run; the message names the file and entry."""


@dataclass(frozen=True)
class NodeAction:
    """A node to start: a process running ``executable`` of ``package`` with ROS arguments."""

    package: str
    executable: str
    #: The node name (None: the nodes keep their own; a process running several nodes, like
    #: the composed policy node, must not be renamed: ``__node`` would rename them all).
    name: str | None = None
    namespace: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
    parameter_files: tuple[str, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    ros_args: tuple[str, ...] = ()
    output: str = "screen"
    shutdown_on_exit: bool = False

    @property
    def label(self) -> str:
        return self.name or self.executable

    def ros_arguments(self) -> list[str]:
        """``--ros-args`` and everything after it, as the process gets it."""
        args = ["--ros-args"]
        if self.name:
            args += ["-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for path in self.parameter_files:
            args += ["--params-file", path]
        for name, value in self.parameters:
            args += ["-p", f"{name}:={value if value else repr('')}"]  # rcl refuses 'name:='

        for source, target in self.remappings:
            args += ["-r", f"{source}:={target}"]
        return [*args, *self.ros_args]


@dataclass
class LaunchDescription:
    """What a launch file resolved to: its arguments (with the values used), environment, and
    the nodes to start, in file order."""

    path: Path
    arguments: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    nodes: list[NodeAction] = field(default_factory=list)


def package_share(package: str) -> Path:
    """``$(find-pkg-share PACKAGE)``: its share directory on ``AMENT_PREFIX_PATH`` (a colcon or
    apt install), else, for this package run from a source checkout, the repository root
    (which holds ``launch/``, ``config/`` and ``bundles/`` like the installed share does)."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and (Path(prefix) / "share" / package / "package.xml").is_file():
            return Path(prefix) / "share" / package
    if package == "policy_runtime":
        root = Path(__file__).resolve().parents[2]
        if (root / "package.xml").is_file():
            return root
    raise LaunchFileError(
        f"$(find-pkg-share {package}): package {package!r} not found on AMENT_PREFIX_PATH"
    )


def parse_cli_arguments(items: list[str]) -> dict[str, str]:
    """``["name:=value", ...]`` -> ``{name: value}``; anything else raises naming the item."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise LaunchFileError(f"launch argument {item!r}: expected name:=value")
        values[name] = value
    return values


class _Resolver:
    """Evaluates substitutions against the variables (args and lets) in scope."""

    def __init__(self, variables: dict[str, str], where: str) -> None:
        self.variables = variables
        self.where = where
        self.functions: dict[str, Callable[[list[str]], str]] = {
            "var": self._var,
            "env": self._env,
            "find-pkg-share": lambda a: str(package_share(self._one(a, "find-pkg-share"))),
            "not": lambda a: _bool_text(not self.truth(self._one(a, "not"))),
            "and": lambda a: _bool_text(all(self.truth(x) for x in self._some(a, "and"))),
            "or": lambda a: _bool_text(any(self.truth(x) for x in self._some(a, "or"))),
            "equals": lambda a: _bool_text(len(self._some(a, "equals")) == 2 and a[0] == a[1]),
        }

    def fail(self, message: str) -> LaunchFileError:
        return LaunchFileError(f"{self.where}: {message}")

    def _one(self, args: list[str], name: str) -> str:
        if len(args) != 1:
            raise self.fail(f"$({name} ...) takes one argument, got {args}")
        return args[0]

    def _some(self, args: list[str], name: str) -> list[str]:
        if not args:
            raise self.fail(f"$({name} ...) needs arguments")
        return args

    def _var(self, args: list[str]) -> str:
        name = self._one(args, "var")
        if name not in self.variables:
            raise self.fail(f"$(var {name}): no argument or let named {name!r}")
        return self.variables[name]

    def _env(self, args: list[str]) -> str:
        if len(args) not in (1, 2):
            raise self.fail(f"$(env NAME [DEFAULT]) takes one or two arguments, got {args}")
        value = os.environ.get(args[0], args[1] if len(args) == 2 else None)
        if value is None:
            raise self.fail(f"$(env {args[0]}): not set and no default")
        return value

    def truth(self, text: str) -> bool:
        lowered = text.strip().lower()
        if lowered in TRUE:
            return True
        if lowered in FALSE:
            return False
        raise self.fail(f"{text!r} is not a boolean (true/false)")

    def text(self, value: object) -> str:
        """A scalar with every ``$(...)`` evaluated (innermost first)."""
        if isinstance(value, bool):
            return _bool_text(value)
        if value is None:
            return ""
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(self.text(v) for v in value) + "]"
        text = str(value)
        while True:
            match = re.search(r"\$\(([^()$]*)\)", text)
            if match is None:
                return text
            words = match.group(1).split()
            if not words:
                raise self.fail("an empty substitution $()")
            function = self.functions.get(words[0])
            if function is None:
                raise self.fail(
                    f"substitution $({words[0]} ...) is not supported by prt launch "
                    f"(supported: {sorted(self.functions)})"
                )
            text = text[: match.start()] + function(words[1:]) + text[match.end() :]


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def load_launch_file(
    path: Path | str, arguments: Mapping[str, str] | None = None
) -> LaunchDescription:
    """Read ``path`` with ``arguments`` (``name -> value``, overriding defaults); raises
    :class:`LaunchFileError` naming the file and entry for anything wrong or unsupported."""
    path = Path(path)
    description = LaunchDescription(path=path)
    _load_into(description, path, dict(arguments or {}), depth=0)
    return description


def _load_into(
    description: LaunchDescription, path: Path, arguments: dict[str, str], depth: int
) -> None:
    if depth > 8:
        raise LaunchFileError(f"{path}: includes nested deeper than 8 (an include cycle?)")
    try:
        document = read_yaml_mapping(path, "launch file")
    except ValueError as exc:
        raise LaunchFileError(str(exc)) from exc
    if not isinstance(document.get("launch"), list):
        raise LaunchFileError(f"launch file {path}: expected a top-level 'launch:' list")
    variables: dict[str, str] = {}
    declared: set[str] = set()
    for index, entry in enumerate(document["launch"]):
        where = f"{path}, entry {index + 1}"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise LaunchFileError(f"{where}: expected one of {ENTRY_KINDS} as a single key")
        kind, body = next(iter(entry.items()))
        if kind not in ENTRY_KINDS:
            raise LaunchFileError(f"{where}: '{kind}' is not supported (supported: {ENTRY_KINDS})")
        if not isinstance(body, dict):
            raise LaunchFileError(f"{where}: '{kind}' needs a mapping")
        where = f"{where} ({kind} {body.get('name', body.get('exec', body.get('file', '')))})"
        resolve = _Resolver(variables, where)
        if not _condition_holds(body, resolve):
            continue
        if kind == "arg":
            name = _required(body, "name", where)
            declared.add(name)
            if name in arguments:
                variables[name] = arguments[name]
            elif "default" in body:
                variables[name] = resolve.text(body["default"])
            else:
                raise LaunchFileError(
                    f"{where}: argument '{name}' has no default: pass {name}:=..."
                )
            if depth == 0:
                description.arguments[name] = variables[name]
                description.descriptions[name] = str(body.get("description", ""))
        elif kind == "let":
            variables[_required(body, "name", where)] = resolve.text(
                _required(body, "value", where)
            )
        elif kind == "set_env":
            description.environment[_required(body, "name", where)] = resolve.text(
                _required(body, "value", where)
            )
        elif kind == "include":
            included = Path(resolve.text(_required(body, "file", where)))
            passed = {
                _required(a, "name", where): resolve.text(_required(a, "value", where))
                for a in body.get("arg", [])
            }
            _load_into(description, included, passed, depth + 1)
        else:
            description.nodes.append(_node(body, resolve, where))
    unknown = sorted(set(arguments) - declared)
    if unknown:
        raise LaunchFileError(
            f"launch file {path}: no argument {unknown}; it declares {sorted(declared)}"
        )


def _required(body: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in body:
        raise LaunchFileError(f"{where}: '{key}' is required")
    return body[key]


def _condition_holds(body: Mapping[str, Any], resolve: _Resolver) -> bool:
    if "if" in body and not resolve.truth(resolve.text(body["if"])):
        return False
    return not ("unless" in body and resolve.truth(resolve.text(body["unless"])))


NODE_KEYS = {
    "pkg", "exec", "name", "namespace", "output", "on_exit", "param", "remap", "ros_args",
    "if", "unless",
}  # fmt: skip


def _node(body: Mapping[str, Any], resolve: _Resolver, where: str) -> NodeAction:
    unknown = sorted(set(body) - NODE_KEYS)
    if unknown:
        raise LaunchFileError(f"{where}: node attribute(s) {unknown} are not supported")
    parameters: list[tuple[str, str]] = []
    files: list[str] = []
    for param in body.get("param", []):
        if "from" in param:
            files.append(resolve.text(param["from"]))
        else:
            parameters.append(
                (_required(param, "name", where), resolve.text(_required(param, "value", where)))
            )
    remaps = [
        (resolve.text(_required(r, "from", where)), resolve.text(_required(r, "to", where)))
        for r in body.get("remap", [])
    ]
    on_exit = body.get("on_exit")
    if on_exit not in (None, "shutdown"):
        raise LaunchFileError(f"{where}: on_exit {on_exit!r}: only 'shutdown' is supported")
    executable = resolve.text(_required(body, "exec", where))
    return NodeAction(
        package=resolve.text(_required(body, "pkg", where)),
        executable=executable,
        name=resolve.text(body["name"]) if "name" in body else None,
        namespace=resolve.text(body.get("namespace", "")),
        parameters=tuple(parameters),
        parameter_files=tuple(files),
        remappings=tuple(remaps),
        ros_args=tuple(resolve.text(body.get("ros_args", "")).split()),
        output=resolve.text(body.get("output", "screen")),
        shutdown_on_exit=on_exit == "shutdown",
    )
