"""{{name}}: counts the events it sees per ordering key (in kv) and publishes
the count to the topic `{{name}}`.

Try: `switchyard plugin test` (runs samples/*.json), then edit `handle`.
`switchyard_plugin` is the SDK: `switchyard plugin build` provides it.
"""

import switchyard_plugin as sy


class Counter(sy.Plugin):
    def init(self, config):
        """Optional: validate the config from the router file; raise to refuse it."""

    def handle(self, ev):
        key = ev.key or ""
        state_key = f"seen/{key}"
        # Writes commit atomically with this event's outputs.
        seen = (sy.kv.get_json(state_key) or 0) + 1
        sy.kv.put_json(state_key, seen)
        sy.log.info(f"{ev.type} for {key}: seen {seen}")
        return [sy.output("{{name}}", "{{name}}.counted", {"eventType": ev.type, "seen": seen}, key=key)]


WitWorld = sy.export(Counter)
