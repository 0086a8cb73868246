"""Python guest SDK for switchyard plugins.

A switchyard plugin is a WebAssembly component implementing the
`switchyard:plugin/processor` world (wit/plugin.wit); componentize-py builds
one from a Python module that defines a `WitWorld` class. This module hides
the generated bindings, so a plugin is a class with `handle(ev) -> outputs`:

    import switchyard_plugin as sy

    class Echo(sy.Plugin):
        def handle(self, ev):
            return [sy.output("echo", ev.type, sy.json(ev))]

    WitWorld = sy.export(Echo)

`switchyard plugin build` puts this module on the build's path, so the import
always refers to the SDK of the switchyard that builds the plugin.
"""

import json as _json
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import wit_world
from componentize_py_types import Err
from wit_world.imports import clock as _clock
from wit_world.imports import kv as _kv
from wit_world.imports import log as _log
from wit_world.imports.types import Event, Failure_BadEvent, Failure_Transient, Output

__all__ = [
    "Event", "Output", "Plugin", "BadEvent", "Transient", "export", "output",
    "json", "attribute", "dumps", "kv", "log", "clock", "JSON_CONTENT_TYPE",
]

JSON_CONTENT_TYPE = "application/json"


class BadEvent(Exception):
    """The event is wrong and retrying cannot help: the router dead-letters it."""


class Transient(Exception):
    """Something passing went wrong: the router retries the event."""


def dumps(value: Any) -> str:
    """JSON text in the same bytes as the Rust SDK (serde_json): keys sorted,
    no spaces, non-ASCII kept. Plugins in different languages then publish
    identical payloads for the same input."""
    return _json.dumps(value, sort_keys=True, separators=(",", ":"),
                       ensure_ascii=False, allow_nan=False)


def json(ev: Event) -> Any:
    """The event's `data` parsed; a payload that is not JSON is a `BadEvent`."""
    try:
        return _json.loads(ev.data)
    except ValueError as e:
        raise BadEvent(f"event {ev.id} data is not valid JSON: {e}") from None


# `ev.json()`, as in the JavaScript and Rust SDKs.
Event.json = json  # type: ignore[attr-defined]


def attribute(ev: Event, name: str) -> Optional[str]:
    """The value of the first attribute called `name`, or None."""
    for k, v in ev.attributes:
        if k == name:
            return v
    return None


def output(topic: str, type: str, data: Any, key: Optional[str] = None,
           attributes: Union[Dict[str, str], Sequence[Tuple[str, str]], None] = None,
           version: str = "1") -> Output:
    """An output event for `topic` carrying `data` as JSON. Fields left empty
    are filled by the router: a stable id derived from the input's, the
    input's key (unless `key` is given), time and trace context, its own
    source."""
    attrs = list(attributes.items()) if isinstance(attributes, dict) else list(attributes or [])
    return Output(topic=topic, event=Event(
        id="", type=type, version=version, source="", key=key, time="",
        content_type=JSON_CONTENT_TYPE, data=dumps(data), attributes=attrs,
        traceparent=None))


class _Kv:
    """The plugin's durable state; writes commit with the event's outputs."""

    def get(self, key: str) -> Optional[bytes]:
        return _kv.get(key)

    def put(self, key: str, value: bytes) -> None:
        _kv.put(key, value)

    def delete(self, key: str) -> None:
        _kv.delete(key)

    def scan_prefix(self, prefix: str, limit: int) -> List[Tuple[str, bytes]]:
        return _kv.scan_prefix(prefix, limit)

    def get_json(self, key: str) -> Any:
        """The JSON value under `key`, or None; an undecodable value is a `BadEvent`."""
        raw = _kv.get(key)
        if raw is None:
            return None
        try:
            return _json.loads(raw)
        except ValueError as e:
            raise BadEvent(f"kv value at {key!r} cannot be decoded: {e}") from None

    def put_json(self, key: str, value: Any) -> None:
        _kv.put(key, dumps(value).encode("utf-8"))


class _Log:
    """Lines in the router's log, tagged with the plugin's name."""

    def _at(self, level: Any, message: str) -> None:
        _log.log(level, message)

    def trace(self, message: str) -> None:
        self._at(_log.Level.TRACE, message)

    def debug(self, message: str) -> None:
        self._at(_log.Level.DEBUG, message)

    def info(self, message: str) -> None:
        self._at(_log.Level.INFO, message)

    def warn(self, message: str) -> None:
        self._at(_log.Level.WARN, message)

    def error(self, message: str) -> None:
        self._at(_log.Level.ERROR, message)


class _Clock:
    def now_ms(self) -> int:
        """Wall-clock milliseconds from the router; prefer the event's own time in outputs."""
        return _clock.now_ms()


kv = _Kv()
log = _Log()
clock = _Clock()


class Plugin:
    """What a plugin implements. `init` gets the plugin's config (a dict, `{}`
    when none) and raises to refuse it; `handle` returns a list of outputs,
    raises `BadEvent` to dead-letter the event or `Transient` to retry it;
    any other exception traps the instance (like a panic)."""

    def init(self, config: Dict[str, Any]) -> None:
        pass

    def handle(self, ev: Event) -> List[Output]:
        raise NotImplementedError


def export(cls: type) -> type:
    """The `WitWorld` class componentize-py exports, driving one `cls` instance."""
    holder: Dict[str, Any] = {}

    def instance() -> Any:
        if "plugin" not in holder:
            holder["plugin"] = cls()
        return holder["plugin"]

    class WitWorld(wit_world.WitWorld):
        def init(self, config: str) -> None:
            try:
                parsed = _json.loads(config) if config.strip() else {}
            except ValueError as e:
                raise Err(f"plugin config is not valid JSON: {e}")
            try:
                instance().init({} if parsed is None else parsed)
            except Exception as e:  # refusing the config, not a crash
                raise Err(str(e))

        def handle(self, ev: Event) -> List[Output]:
            try:
                return list(instance().handle(ev))
            except BadEvent as e:
                raise Err(Failure_BadEvent(str(e)))
            except Transient as e:
                raise Err(Failure_Transient(str(e)))

    return WitWorld
