//! The domain-fanout transform as a Fluvio SmartModule `map`: the record's
//! value (the event's JSON payload) in, the enriched payload out.

use fluvio_smartmodule::{RecordData, Result, SmartModuleRecord, eyre, smartmodule};

#[path = "../../../../plugins/domain-fanout/src/transform.rs"]
#[allow(dead_code)]
mod transform;

#[smartmodule(map)]
pub fn map(record: &SmartModuleRecord) -> Result<(Option<RecordData>, RecordData)> {
    let data = std::str::from_utf8(record.value.as_ref())?;
    let out = transform::fan_out("", data, "domain.").map_err(|e| eyre!("{e:?}"))?;
    Ok((record.key.clone(), out.data.into()))
}
