// JavaScript guest SDK for switchyard plugins.
//
// A switchyard plugin is a WebAssembly component implementing the
// `switchyard:plugin/processor` world (wit/plugin.wit). ComponentizeJS turns
// an ES module into such a component: the module exports `init` and `handle`,
// and imports the host interfaces as `switchyard:plugin/<name>@<version>`.
// This file hides those shapes, so a plugin is a function from an event to
// outputs:
//
//   import { plugin, output, BadEvent } from "./switchyard.js";
//   const p = plugin({ handle(ev) { return [output("echo", ev.type, ev.json())]; } });
//   export const init = p.init;
//   export const handle = p.handle;
//
// `switchyard plugin build` copies this file next to the plugin's entry module,
// so the import above always refers to the SDK of the switchyard that builds it.

import * as hostLog from "switchyard:plugin/log@0.1.0";
import * as hostKv from "switchyard:plugin/kv@0.1.0";
import * as hostClock from "switchyard:plugin/clock@0.1.0";

/** The content type `output()` sets: every payload built here is JSON. */
export const JSON_CONTENT_TYPE = "application/json";

/** Throw it when the event is wrong and retrying cannot help: the router dead-letters it. */
export class BadEvent extends Error {
  constructor(message) {
    super(message);
    this.name = "BadEvent";
  }
}

/** Throw it when something passing went wrong: the router retries the event. */
export class Transient extends Error {
  constructor(message) {
    super(message);
    this.name = "Transient";
  }
}

// JSON text in the same bytes as the Rust SDK (serde_json): object keys in
// code-point order, no spaces. Plugins written in different languages then
// publish identical payloads for the same input.
const SURROGATE = /[\uD800-\uDFFF]/;

function compareCodePoints(a, b) {
  const x = Array.from(a);
  const y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

// A key the engine lists before all others, in numeric order, whatever the
// order it was added in (an array index such as "7"), one per line of the
// keys joined with newlines. A key with a newline of its own may match
// wrongly; that only sends its object to the slow path, which is exact.
const INDEX_LINE = /^(?:0|[1-9][0-9]{0,9})$/m;

/** `value`'s own keys in code-point order, those whose value is defined. */
function sortedKeys(value) {
  const keys = Object.keys(value).filter((k) => value[k] !== undefined);
  sortCodePoints(keys, keys.join("\n"));
  return keys;
}

function sortCodePoints(keys, joined) {
  // Without surrogates, UTF-16 order (the built-in sort's) is code point
  // order, and the engine sorts without calling back into JavaScript.
  if (SURROGATE.test(joined)) keys.sort(compareCodePoints);
  else keys.sort();
}

// Set by `canonicalCopy` when an object has more than one key and one of
// them is an array index: the engine would write that one first.
let indexKeys = false;

// A copy of `value` whose objects hold their keys in canonical order, for
// the engine's own `JSON.stringify` to write out. The interpreter runs slowly
// (no JIT in a component), so this does as little per key as it can: one
// regular expression per object for both checks, no callbacks.
function canonicalCopy(value) {
  if (Array.isArray(value)) {
    const n = value.length;
    const out = new Array(n);
    for (let i = 0; i < n; i++) {
      const v = value[i];
      out[i] = typeof v === "object" && v !== null ? canonicalCopy(v) : v;
    }
    return out;
  }
  const keys = Object.keys(value);
  if (keys.length > 1) {
    const joined = keys.join("\n");
    if (INDEX_LINE.test(joined)) indexKeys = true;
    sortCodePoints(keys, joined);
  }
  // No prototype: "__proto__" is then a key like any other.
  const out = Object.create(null);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    const v = value[k];
    if (v === undefined) continue;
    out[k] = typeof v === "object" && v !== null ? canonicalCopy(v) : v;
  }
  return out;
}

// The same text, written piece by piece: for objects with array-index keys.
function slowStringify(value) {
  if (value === null || typeof value !== "object") {
    return JSON.stringify(value === undefined ? null : value);
  }
  if (Array.isArray(value)) {
    return "[" + value.map((v) => slowStringify(v)).join(",") + "]";
  }
  return "{" + sortedKeys(value).map((k) => JSON.stringify(k) + ":" + slowStringify(value[k])).join(",") + "}";
}

/**
 * Canonical JSON text of `value`: sorted keys, compact, like the Rust SDK.
 * The engine's `JSON.stringify` writes a copy with its keys in order (the
 * interpreter's work is then one pass that copies; the writing is native),
 * unless an object has array-index keys, which the engine always lists first.
 */
export function stringify(value) {
  if (value === null || typeof value !== "object") {
    return JSON.stringify(value === undefined ? null : value);
  }
  indexKeys = false;
  const copy = canonicalCopy(value);
  return indexKeys ? slowStringify(value) : JSON.stringify(copy);
}

/** Parses an event's `data`; a payload that is not JSON is a `BadEvent`. */
export function json(ev) {
  try {
    return JSON.parse(ev.data);
  } catch (e) {
    throw new BadEvent(`event ${ev.id} data is not valid JSON: ${e.message}`);
  }
}

/** The value of the first attribute called `name`, or undefined. */
export function attribute(ev, name) {
  const hit = ev.attributes.find(([k]) => k === name);
  return hit === undefined ? undefined : hit[1];
}

/**
 * An output event for `topic` carrying `data` as JSON. Fields left empty are
 * filled by the router: a stable id derived from the input's, the input's
 * key, time and trace context, its own source. Options: `key`, `attributes`
 * (object or list of pairs), `version` (default "1").
 */
export function output(topic, type, data, options = {}) {
  const attrs = options.attributes ?? [];
  return {
    topic,
    event: {
      id: "",
      type,
      version: options.version ?? "1",
      source: "",
      key: options.key,
      time: "",
      contentType: JSON_CONTENT_TYPE,
      data: stringify(data),
      attributes: Array.isArray(attrs) ? attrs : Object.entries(attrs),
      traceparent: undefined,
    },
  };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The plugin's durable state; writes commit with the event's outputs. */
export const kv = {
  /** The bytes under `key` (Uint8Array), or undefined. */
  get: (key) => hostKv.get(key),
  put: (key, bytes) => hostKv.put(key, bytes),
  delete: (key) => hostKv.delete(key),
  /** `[key, bytes]` pairs whose key starts with `prefix`, in key order. */
  scanPrefix: (prefix, limit) => hostKv.scanPrefix(prefix, limit),
  /** The JSON value under `key`, or undefined; an undecodable value is a `BadEvent`. */
  getJson(key) {
    const bytes = hostKv.get(key);
    if (bytes === undefined) return undefined;
    try {
      return JSON.parse(decoder.decode(bytes));
    } catch (e) {
      throw new BadEvent(`kv value at ${JSON.stringify(key)} cannot be decoded: ${e.message}`);
    }
  },
  putJson: (key, value) => hostKv.put(key, encoder.encode(stringify(value))),
};

function at(level) {
  return (...parts) => hostLog.log(level, parts.map((p) => (typeof p === "string" ? p : stringify(p))).join(" "));
}

/** Lines in the router's log, tagged with the plugin's name. */
export const log = {
  trace: at("trace"),
  debug: at("debug"),
  info: at("info"),
  warn: at("warn"),
  error: at("error"),
};

/** Wall-clock time from the router; prefer the event's own time in outputs. */
export const clock = {
  nowMs: () => Number(hostClock.nowMs()),
};

/**
 * Wraps a plugin's `init(config)` and `handle(ev)` into the component's
 * exports. `config` arrives parsed (`{}` when none); returning normally
 * accepts it, throwing refuses the plugin. `handle` returns a list of
 * outputs, throws `BadEvent` to dead-letter the event, or `Transient` to have
 * it retried; any other exception traps the instance (like a panic).
 */
export function plugin({ init, handle }) {
  return {
    init(configText) {
      let config;
      try {
        config = configText.trim() === "" ? {} : JSON.parse(configText);
      } catch (e) {
        throw `plugin config is not valid JSON: ${e.message}`;
      }
      if (config === null) config = {};
      if (init === undefined) return;
      try {
        init(config);
      } catch (e) {
        throw e instanceof Error ? e.message : String(e);
      }
    },
    handle(ev) {
      const withJson = Object.assign({}, ev, { json: () => json(ev) });
      try {
        return handle(withJson);
      } catch (e) {
        if (e instanceof BadEvent) throw { tag: "bad-event", val: e.message };
        if (e instanceof Transient) throw { tag: "transient", val: e.message };
        throw e;
      }
    },
  };
}
