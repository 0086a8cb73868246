// Domain fan-out, in JavaScript: routes each HMPPS domain event to a
// per-domain topic (`<prefix><domain>`, e.g. `domain.prison-offender-events`),
// enriched with its identifiers flattened. Same outputs as the Rust plugin
// in plugins/domain-fanout.
//
// Config (optional): {"topic_prefix": "domain."}.
import { plugin, output, BadEvent } from "./switchyard.js";

const DEFAULT_PREFIX = "domain.";
let prefix = DEFAULT_PREFIX;

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// `[{"type": "NOMS", "value": "A1234BC"}]` as `{"NOMS": "A1234BC"}`; entries
// without a string type and value are skipped; the first value of a type wins.
function flattenIdentifiers(data) {
  const flat = {};
  const ids = isObject(data.personReference) ? data.personReference.identifiers : undefined;
  for (const id of Array.isArray(ids) ? ids : []) {
    if (isObject(id) && typeof id.type === "string" && typeof id.value === "string" && !(id.type in flat)) {
      flat[id.type] = id.value;
    }
  }
  return flat;
}

const p = plugin({
  init(config) {
    for (const k of Object.keys(config)) {
      if (k !== "topic_prefix") throw new Error(`invalid plugin config: unknown field \`${k}\`, expected \`topic_prefix\``);
    }
    if (config.topic_prefix !== undefined && typeof config.topic_prefix !== "string") {
      throw new Error("invalid plugin config: topic_prefix must be a string");
    }
    prefix = config.topic_prefix ?? DEFAULT_PREFIX;
  },

  handle(ev) {
    const data = ev.json();
    if (!isObject(data)) throw new BadEvent(`event ${ev.id} data is not a JSON object`);
    // The envelope's type is authoritative; the payload's is the fallback.
    const eventType = ev.type === "" && typeof data.eventType === "string" ? data.eventType : ev.type;
    const domain = eventType.split(".")[0];
    if (domain === "") throw new BadEvent(`cannot tell the domain of event type ${JSON.stringify(eventType)}`);
    data.identifiers = flattenIdentifiers(data);
    data.domain = domain;
    // No key: the output keeps the input's ordering key.
    return [output(prefix + domain, eventType, data, { attributes: [["domain", domain]] })];
  },
});

export const init = p.init;
export const handle = p.handle;
