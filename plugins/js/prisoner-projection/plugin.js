// Prisoner projection, in JavaScript: folds HMPPS `prisoner.received` /
// `prisoner.released` domain events into the current state of each prisoner
// and publishes that whole state (event-carried state transfer). Same
// outputs as the Rust plugin in plugins/prisoner-projection.
//
// State lives in kv under `prisoner/<NOMS number>`; each applied event emits
// one `prisoner.state.updated` event keyed by the NOMS number.
// Config (optional): {"topic": "prisoner-state"}.
import { plugin, output, kv, log, BadEvent } from "./switchyard.js";

const RECEIVED = "prison-offender-events.prisoner.received";
const RELEASED = "prison-offender-events.prisoner.released";
const OUTPUT_TYPE = "prisoner.state.updated";
let topic = "prisoner-state";

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function shapeError(ev, what) {
  return new BadEvent(`event ${ev.id} data does not match the expected shape: ${what}`);
}

// An optional string field: absent or null is undefined, anything else but a
// string is the event's fault.
function optString(ev, obj, field) {
  const v = obj[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw shapeError(ev, `${field} must be a string`);
  return v;
}

// Validates the event and extracts the change it describes; every problem is
// a BadEvent, since the event will never become valid by retrying it.
function changeFrom(ev) {
  const data = ev.json();
  if (!isObject(data)) throw shapeError(ev, "expected an object");
  const payloadType = optString(ev, data, "eventType");
  const occurredAt = optString(ev, data, "occurredAt");
  let prisonId;
  if (data.additionalInformation !== undefined && data.additionalInformation !== null) {
    if (!isObject(data.additionalInformation)) throw shapeError(ev, "additionalInformation must be an object");
    prisonId = optString(ev, data.additionalInformation, "prisonId");
  }
  let identifiers = [];
  if (data.personReference !== undefined && data.personReference !== null) {
    if (!isObject(data.personReference)) throw shapeError(ev, "personReference must be an object");
    const ids = data.personReference.identifiers;
    if (ids !== undefined) {
      if (!Array.isArray(ids)) throw shapeError(ev, "personReference.identifiers must be an array");
      for (const id of ids) {
        if (!isObject(id) || typeof id.type !== "string" || typeof id.value !== "string") {
          throw shapeError(ev, "each identifier needs a string type and value");
        }
      }
      identifiers = ids;
    }
  }

  // The envelope's type is authoritative; the payload's is the fallback.
  const eventType = ev.type !== "" ? ev.type : payloadType || undefined;
  if (eventType === undefined) {
    throw new BadEvent("event has no type (neither the event type nor data.eventType is set)");
  }
  let status;
  if (eventType === RECEIVED) status = "IN";
  else if (eventType === RELEASED) status = "OUT";
  else throw new BadEvent(`unsupported event type ${JSON.stringify(eventType)}: expected ${RECEIVED} or ${RELEASED}`);

  const noms = identifiers.find((id) => id.type === "NOMS" && id.value !== "");
  if (noms === undefined) {
    throw new BadEvent("no NOMS identifier in data.personReference.identifiers: cannot tell which prisoner this is");
  }
  const when = occurredAt || ev.time;
  if (!when) throw new BadEvent("event has no time (neither data.occurredAt nor the event time is set)");
  return { nomsNumber: noms.value, status, prisonId: prisonId || null, eventType, occurredAt: when };
}

// Folds one change into the previous state (undefined for a new prisoner).
function apply(previous, change) {
  return {
    nomsNumber: change.nomsNumber,
    status: change.status,
    prisonId: change.prisonId ?? previous?.prisonId ?? null,
    lastEventType: change.eventType,
    lastOccurredAt: change.occurredAt,
    eventCount: (previous?.eventCount ?? 0) + 1,
  };
}

const p = plugin({
  init(config) {
    for (const k of Object.keys(config)) {
      if (k !== "topic") throw new Error(`invalid plugin config: unknown field \`${k}\`, expected \`topic\``);
    }
    if (config.topic !== undefined && typeof config.topic !== "string") {
      throw new Error("invalid plugin config: topic must be a string");
    }
    if (config.topic === "") throw new Error("invalid plugin config: topic must not be empty");
    topic = config.topic ?? "prisoner-state";
  },

  handle(ev) {
    const change = changeFrom(ev);
    const key = `prisoner/${change.nomsNumber}`;
    // Read-modify-write is safe: events of one key are handled in order, and
    // the put commits atomically with the output below.
    const state = apply(kv.getJson(key), change);
    kv.putJson(key, state);
    log.debug(`prisoner ${state.nomsNumber} is ${state.status} (event ${ev.id} of ${state.eventCount})`);
    return [output(topic, OUTPUT_TYPE, state, { key: state.nomsNumber })];
  },
});

export const init = p.init;
export const handle = p.handle;
