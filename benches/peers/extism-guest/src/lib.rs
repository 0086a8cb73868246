//! The domain-fanout transform as an Extism plugin: the event's JSON payload
//! in, the enriched payload out (the topic is `domain.` + the output's
//! `domain` field).

use extism_pdk::{FnResult, plugin_fn};

#[path = "../../../../plugins/domain-fanout/src/transform.rs"]
#[allow(dead_code)]
mod transform;

#[plugin_fn]
pub fn handle(input: String) -> FnResult<String> {
    let out = transform::fan_out("", &input, "domain.")
        .map_err(|e| extism_pdk::Error::msg(format!("{e:?}")))?;
    Ok(out.data)
}
