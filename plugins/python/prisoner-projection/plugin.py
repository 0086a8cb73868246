"""Prisoner projection, in Python: folds HMPPS `prisoner.received` /
`prisoner.released` domain events into the current state of each prisoner
and publishes that whole state (event-carried state transfer). Same outputs
as the Rust plugin in plugins/prisoner-projection.

State lives in kv under `prisoner/<NOMS number>`; each applied event emits
one `prisoner.state.updated` event keyed by the NOMS number.
Config (optional): {"topic": "prisoner-state"}.
"""

import switchyard_plugin as sy

RECEIVED = "prison-offender-events.prisoner.received"
RELEASED = "prison-offender-events.prisoner.released"
OUTPUT_TYPE = "prisoner.state.updated"


def shape_error(ev, what):
    return sy.BadEvent(f"event {ev.id} data does not match the expected shape: {what}")


def opt_string(ev, obj, field):
    """An optional string field: absent or null is None, anything else but a
    string is the event's fault."""
    v = obj.get(field)
    if v is not None and not isinstance(v, str):
        raise shape_error(ev, f"{field} must be a string")
    return v


def change_from(ev):
    """Validates the event and extracts the change it describes; every
    problem is a BadEvent, since retrying cannot make the event valid."""
    data = ev.json()
    if not isinstance(data, dict):
        raise shape_error(ev, "expected an object")
    payload_type = opt_string(ev, data, "eventType")
    occurred_at = opt_string(ev, data, "occurredAt")
    prison_id = None
    info = data.get("additionalInformation")
    if info is not None:
        if not isinstance(info, dict):
            raise shape_error(ev, "additionalInformation must be an object")
        prison_id = opt_string(ev, info, "prisonId")
    identifiers = []
    ref = data.get("personReference")
    if ref is not None:
        if not isinstance(ref, dict):
            raise shape_error(ev, "personReference must be an object")
        if "identifiers" in ref:
            ids = ref["identifiers"]
            if not isinstance(ids, list):
                raise shape_error(ev, "personReference.identifiers must be an array")
            for i in ids:
                if not (isinstance(i, dict) and isinstance(i.get("type"), str) and isinstance(i.get("value"), str)):
                    raise shape_error(ev, "each identifier needs a string type and value")
            identifiers = ids

    # The envelope's type is authoritative; the payload's is the fallback.
    event_type = ev.type or payload_type
    if not event_type:
        raise sy.BadEvent("event has no type (neither the event type nor data.eventType is set)")
    if event_type == RECEIVED:
        status = "IN"
    elif event_type == RELEASED:
        status = "OUT"
    else:
        raise sy.BadEvent(f"unsupported event type {sy.dumps(event_type)}: expected {RECEIVED} or {RELEASED}")

    noms = next((i["value"] for i in identifiers if i["type"] == "NOMS" and i["value"] != ""), None)
    if noms is None:
        raise sy.BadEvent("no NOMS identifier in data.personReference.identifiers: cannot tell which prisoner this is")
    when = occurred_at or ev.time
    if not when:
        raise sy.BadEvent("event has no time (neither data.occurredAt nor the event time is set)")
    return {"nomsNumber": noms, "status": status, "prisonId": prison_id or None,
            "eventType": event_type, "occurredAt": when}


def apply(previous, change):
    """Folds one change into the previous state (None for a new prisoner)."""
    previous = previous or {}
    return {
        "nomsNumber": change["nomsNumber"],
        "status": change["status"],
        "prisonId": change["prisonId"] or previous.get("prisonId"),
        "lastEventType": change["eventType"],
        "lastOccurredAt": change["occurredAt"],
        "eventCount": previous.get("eventCount", 0) + 1,
    }


class PrisonerProjection(sy.Plugin):
    topic = "prisoner-state"

    def init(self, config):
        for k in config:
            if k != "topic":
                raise ValueError(f"invalid plugin config: unknown field `{k}`, expected `topic`")
        topic = config.get("topic", "prisoner-state")
        if not isinstance(topic, str):
            raise ValueError("invalid plugin config: topic must be a string")
        if topic == "":
            raise ValueError("invalid plugin config: topic must not be empty")
        self.topic = topic

    def handle(self, ev):
        change = change_from(ev)
        key = f"prisoner/{change['nomsNumber']}"
        # Read-modify-write is safe: events of one key are handled in order,
        # and the put commits atomically with the output below.
        state = apply(sy.kv.get_json(key), change)
        sy.kv.put_json(key, state)
        sy.log.debug(f"prisoner {state['nomsNumber']} is {state['status']} "
                     f"(event {ev.id} of {state['eventCount']})")
        return [sy.output(self.topic, OUTPUT_TYPE, state, key=state["nomsNumber"])]


WitWorld = sy.export(PrisonerProjection)
