"""Domain fan-out, in Python: routes each HMPPS domain event to a per-domain
topic (`<prefix><domain>`, e.g. `domain.prison-offender-events`), enriched
with its identifiers flattened. Same outputs as the Rust plugin in
plugins/domain-fanout.

Config (optional): {"topic_prefix": "domain."}.
"""

import switchyard_plugin as sy

DEFAULT_PREFIX = "domain."


def flatten_identifiers(data):
    """`[{"type": "NOMS", "value": "A1234BC"}]` as `{"NOMS": "A1234BC"}`;
    entries without a string type and value are skipped; the first value of
    a type wins."""
    flat = {}
    ref = data.get("personReference")
    ids = ref.get("identifiers") if isinstance(ref, dict) else None
    for i in ids if isinstance(ids, list) else []:
        if isinstance(i, dict) and isinstance(i.get("type"), str) and isinstance(i.get("value"), str):
            flat.setdefault(i["type"], i["value"])
    return flat


class DomainFanout(sy.Plugin):
    prefix = DEFAULT_PREFIX

    def init(self, config):
        for k in config:
            if k != "topic_prefix":
                raise ValueError(f"invalid plugin config: unknown field `{k}`, expected `topic_prefix`")
        prefix = config.get("topic_prefix", DEFAULT_PREFIX)
        if not isinstance(prefix, str):
            raise ValueError("invalid plugin config: topic_prefix must be a string")
        self.prefix = prefix

    def handle(self, ev):
        data = sy.json(ev)
        if not isinstance(data, dict):
            raise sy.BadEvent(f"event {ev.id} data is not a JSON object")
        # The envelope's type is authoritative; the payload's is the fallback.
        payload_type = data.get("eventType")
        event_type = payload_type if ev.type == "" and isinstance(payload_type, str) else ev.type
        domain = event_type.split(".")[0]
        if domain == "":
            raise sy.BadEvent(f"cannot tell the domain of event type {sy.dumps(event_type)}")
        data["identifiers"] = flatten_identifiers(data)
        data["domain"] = domain
        # No key: the output keeps the input's ordering key.
        return [sy.output(self.prefix + domain, event_type, data, attributes=[("domain", domain)])]


WitWorld = sy.export(DomainFanout)
