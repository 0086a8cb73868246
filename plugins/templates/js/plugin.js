// {{name}}: counts the events it sees per ordering key (in kv) and publishes
// the count to the topic `{{name}}`.
//
// Try: `switchyard plugin test` (runs samples/*.json), then edit `handle`.
// `./switchyard.js` is the SDK: `switchyard plugin build` provides it.
import { plugin, output, kv, log } from "./switchyard.js";

const p = plugin({
  // Optional: validate the config from the router file; throw to refuse it.
  init(config) {},

  handle(ev) {
    const key = ev.key ?? "";
    const stateKey = `seen/${key}`;
    // Writes commit atomically with this event's outputs.
    const seen = (kv.getJson(stateKey) ?? 0) + 1;
    kv.putJson(stateKey, seen);
    log.info(`${ev.type} for ${key}: seen ${seen}`);
    return [output("{{name}}", "{{name}}.counted", { eventType: ev.type, seen }, { key })];
  },
});

export const init = p.init;
export const handle = p.handle;
