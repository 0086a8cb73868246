//! Validation of the AWS sections: every error names the key (and the line
//! where `toml` kept a span), like the rest of the config.

use super::{
    Delivery, MAX_BATCH_ENTRIES, MAX_CONFIGURED_ATTRIBUTES, MAX_VISIBILITY_TIMEOUT_S,
    MAX_WAIT_TIME_S, SinkConfig, check_attribute_name, check_resource_name, queue_name,
};
use crate::config::{Capability, Config, ConfigError, Locator, check_topic_name};

pub(in crate::config) fn validate(cfg: &Config, at: &Locator<'_>) -> Result<(), ConfigError> {
    let whole = |key: &str, reason: String| at.error(None, key, reason);
    let aws = &cfg.aws;
    if let Some(url) = &aws.endpoint_url {
        let u = url.get_ref();
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            let reason = format!("endpoint {u:?} must start with http:// or https://");
            return Err(at.error(Some(url.span()), "aws.endpoint_url", reason));
        }
    }
    for (key, v) in [
        ("aws.max_attempts", u64::from(aws.max_attempts)),
        ("aws.backoff_ms", aws.backoff_ms),
        ("aws.connect_timeout_ms", aws.connect_timeout_ms),
    ] {
        if v == 0 {
            return Err(whole(key, "must be at least 1".into()));
        }
    }
    if aws.max_backoff_ms < aws.backoff_ms {
        return Err(whole(
            "aws.max_backoff_ms",
            "must be at least aws.backoff_ms".into(),
        ));
    }
    for (i, s) in aws.subscriptions.iter().enumerate() {
        let key = format!("aws.subscriptions[{i}]");
        for (field, name) in [("topic", &s.topic), ("queue", &s.queue)] {
            check_resource_name(name).map_err(|r| whole(&format!("{key}.{field}"), r))?;
        }
        if let Some(dlq) = &s.dead_letter_queue {
            check_resource_name(dlq).map_err(|r| whole(&format!("{key}.dead_letter_queue"), r))?;
        }
        if s.topic.ends_with(".fifo") && !s.queue.ends_with(".fifo") {
            let reason = "a fifo topic can only deliver to a fifo queue (name ending .fifo)";
            return Err(whole(&format!("{key}.queue"), reason.into()));
        }
        match &s.filter_policy {
            None | Some(toml::Value::Table(_)) => {}
            Some(_) => {
                let reason = "must be a table such as { eventType = [\"a.b\"] }".into();
                return Err(whole(&format!("{key}.filter_policy"), reason));
            }
        }
    }
    let longest_wait = cfg
        .sources
        .sqs
        .values()
        .map(|s| u64::from(s.wait_time_s))
        .max()
        .unwrap_or(0);
    if aws.call_timeout_ms <= longest_wait * 1000 {
        let reason = format!("must exceed the longest wait_time_s ({longest_wait} s)");
        return Err(whole("aws.call_timeout_ms", reason));
    }
    for (name, s) in &cfg.sources.sqs {
        let key = format!("sources.sqs.{name}");
        check_topic_name(name).map_err(|r| whole(&key, format!("bad source name: {r}")))?;
        if let Err(reason) = check_target(s.queue.get_ref()) {
            return Err(at.error(Some(s.queue.span()), &format!("{key}.queue"), reason));
        }
        if s.wait_time_s > MAX_WAIT_TIME_S {
            let reason = format!("must be at most {MAX_WAIT_TIME_S}");
            return Err(whole(&format!("{key}.wait_time_s"), reason));
        }
        if s.max_messages == 0 || s.max_messages as usize > MAX_BATCH_ENTRIES {
            let reason = format!("must be 1 to {MAX_BATCH_ENTRIES}");
            return Err(whole(&format!("{key}.max_messages"), reason));
        }
        if s.concurrency == 0 {
            return Err(whole(
                &format!("{key}.concurrency"),
                "must be at least 1".into(),
            ));
        }
        if s.visibility_timeout_s < 2 || s.visibility_timeout_s > MAX_VISIBILITY_TIMEOUT_S {
            let reason = format!("must be 2 to {MAX_VISIBILITY_TIMEOUT_S}");
            return Err(whole(&format!("{key}.visibility_timeout_s"), reason));
        }
        if s.max_receive_count == 0 {
            let reason = "must be at least 1".into();
            return Err(whole(&format!("{key}.max_receive_count"), reason));
        }
        if let Some(dlq) = &s.dead_letter_queue {
            check_resource_name(dlq).map_err(|r| whole(&format!("{key}.dead_letter_queue"), r))?;
            if dlq.ends_with(".fifo") != queue_name(s.queue.get_ref()).ends_with(".fifo") {
                let reason = "must be fifo exactly when the queue is (name ending .fifo)".into();
                return Err(whole(&format!("{key}.dead_letter_queue"), reason));
            }
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (kind, sinks) in [("sns", &cfg.sinks.sns), ("sqs", &cfg.sinks.sqs)] {
        for (name, s) in sinks {
            validate_sink(kind, name, s, at)?;
            if !names.insert(name.as_str()) {
                let reason = format!("sink name {name:?} is used by an sns and an sqs sink");
                return Err(whole(&format!("sinks.{kind}.{name}"), reason));
            }
        }
    }
    Ok(())
}

fn validate_sink(
    kind: &str,
    name: &str,
    s: &SinkConfig,
    at: &Locator<'_>,
) -> Result<(), ConfigError> {
    let whole = |key: &str, reason: String| at.error(None, key, reason);
    let key = format!("sinks.{kind}.{name}");
    check_topic_name(name).map_err(|r| whole(&key, format!("bad sink name: {r}")))?;
    let (needed, other) = match kind {
        "sns" => (("topic", &s.topic), ("queue", &s.queue)),
        _ => (("queue", &s.queue), ("topic", &s.topic)),
    };
    if let Some(o) = other.1 {
        let reason = format!("an {kind} sink takes `{}`, not `{}`", needed.0, other.0);
        return Err(at.error(Some(o.span()), &format!("{key}.{}", other.0), reason));
    }
    match needed.1 {
        Some(t) => {
            if let Err(reason) = check_target(t.get_ref()) {
                return Err(at.error(Some(t.span()), &format!("{key}.{}", needed.0), reason));
            }
        }
        None => {
            let reason = format!("an {kind} sink needs `{}`", needed.0);
            return Err(whole(&key, reason));
        }
    }
    if s.from.is_empty() {
        let reason = "needs at least one log topic (or glob) to forward".into();
        return Err(whole(&format!("{key}.from"), reason));
    }
    for (j, pat) in s.from.iter().enumerate() {
        if let Err(reason) = crate::router::check_pattern(pat.get_ref()) {
            return Err(at.error(Some(pat.span()), &format!("{key}.from[{j}]"), reason));
        }
    }
    if s.attributes.len() > MAX_CONFIGURED_ATTRIBUTES {
        let reason = format!("at most {MAX_CONFIGURED_ATTRIBUTES} (SNS/SQS allow 10 per message)");
        return Err(whole(&format!("{key}.attributes"), reason));
    }
    for (attr, value) in &s.attributes {
        check_attribute_name(attr).map_err(|r| whole(&format!("{key}.attributes.{attr}"), r))?;
        if value.is_empty() {
            let reason = "must not be empty (SNS/SQS refuse empty values)".into();
            return Err(whole(&format!("{key}.attributes.{attr}"), reason));
        }
    }
    if s.in_flight == 0 {
        return Err(whole(
            &format!("{key}.in_flight"),
            "must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Checks direct-delivery routes: their plugins may not keep `kv` state
/// (state is committed in log order by the pipeline, which a route running
/// inside concurrent requests cannot follow). A sink is not needed: without
/// one, direct delivery writes the outputs with the input in one commit.
pub(in crate::config) fn validate_routes(
    cfg: &Config,
    at: &Locator<'_>,
) -> Result<(), ConfigError> {
    for (i, r) in cfg.routes.iter().enumerate() {
        if r.delivery != Delivery::Direct {
            continue;
        }
        for (j, stage) in r.pipeline.iter().enumerate() {
            let keeps_state = cfg
                .plugins
                .get(stage.get_ref())
                .is_some_and(|p| p.capabilities.contains(&Capability::Kv));
            if keeps_state {
                let reason = format!(
                    "plugin {:?} keeps kv state and cannot run in a direct-delivery route \
                     (state is committed in log order by the pipeline; use delivery = \"outbox\")",
                    stage.get_ref()
                );
                return Err(at.error(
                    Some(stage.span()),
                    &format!("routes[{i}].pipeline[{j}]"),
                    reason,
                ));
            }
        }
    }
    Ok(())
}

/// A topic or queue as the config may give it: a name, an ARN or a URL.
fn check_target(t: &str) -> Result<(), String> {
    if t.starts_with("arn:") || t.starts_with("http://") || t.starts_with("https://") {
        return Ok(());
    }
    check_resource_name(t)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Delivery, MessageFormat};

    const BASE: &str = r#"
[schemas]
base = "base.json"

[plugins.fanout]
path = "p.wasm"

[plugins.proj]
path = "p.wasm"
capabilities = ["kv"]

[[routes]]
name = "r"
match = ["*"]
pipeline = ["fanout"]
"#;

    fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        for f in ["base.json", "p.wasm"] {
            std::fs::write(dir.path().join(f), "{}").unwrap();
        }
        Config::parse(&dir.path().join("c.toml"), &format!("{BASE}{extra}"))
    }

    #[test]
    fn aws_sections_parse_with_defaults() {
        let cfg = parse(
            r#"
[sources.sqs.ingest]
queue = "switchyard-ingest"

[sinks.sns.events]
topic = "switchyard-events"
from = ["*"]

[sinks.sqs.audit]
queue = "https://sqs.eu-west-2.amazonaws.com/1/audit.fifo"
from = ["domain.*"]
format = "data"
attributes = { producer = "switchyard" }
"#,
        )
        .unwrap();
        assert!(cfg.uses_aws());
        let src = &cfg.sources.sqs["ingest"];
        assert_eq!(
            (src.wait_time_s, src.max_messages, src.concurrency),
            (20, 10, 2)
        );
        assert_eq!(cfg.sinks.sns["events"].format, MessageFormat::Cloudevent);
        assert_eq!(
            cfg.sinks.sqs["audit"].target(),
            "https://sqs.eu-west-2.amazonaws.com/1/audit.fifo"
        );
        assert_eq!(cfg.routes[0].delivery, Delivery::Outbox);
        assert!(!parse("").unwrap().uses_aws());
    }

    #[test]
    fn bad_aws_settings_name_the_key() {
        let cases = [
            (
                "[sources.sqs.in]\nqueue = \"q\"\nmax_messages = 11\n",
                "sources.sqs.in.max_messages",
            ),
            (
                "[sources.sqs.in]\nqueue = \"q\"\nwait_time_s = 21\n",
                "sources.sqs.in.wait_time_s",
            ),
            (
                "[sources.sqs.in]\nqueue = \"bad name\"\n",
                "sources.sqs.in.queue",
            ),
            (
                "[sinks.sns.out]\nqueue = \"q\"\nfrom = [\"*\"]\n",
                "sinks.sns.out.queue",
            ),
            ("[sinks.sqs.out]\nfrom = [\"*\"]\n", "sinks.sqs.out"),
            (
                "[sinks.sns.out]\ntopic = \"t\"\nfrom = []\n",
                "sinks.sns.out.from",
            ),
            (
                "[sinks.sns.out]\ntopic = \"t\"\nfrom = [\"*\"]\nattributes = { \"AWS.x\" = \"v\" }\n",
                "sinks.sns.out.attributes.AWS.x",
            ),
            (
                "[sinks.sns.out]\ntopic = \"t\"\nfrom = [\"*\"]\n[sinks.sqs.out]\nqueue = \"q\"\nfrom = [\"*\"]\n",
                "sinks.sqs.out",
            ),
            (
                "[aws]\nendpoint_url = \"localhost:4566\"\n",
                "aws.endpoint_url",
            ),
        ];
        for (extra, key) in cases {
            let err = parse(extra).expect_err(extra);
            assert_eq!(err.key, key, "{extra}: {err}");
        }
    }

    #[test]
    fn direct_routes_need_stateless_plugins_and_no_sink() {
        let direct = |stage: &str, sink: bool| {
            let sink = if sink {
                "[sinks.sns.out]\ntopic = \"t\"\nfrom = [\"*\"]\n"
            } else {
                ""
            };
            format!(
                "{sink}[[routes]]\nname = \"d\"\nmatch = [\"a.*\"]\npipeline = [\"{stage}\"]\ndelivery = \"direct\"\n"
            )
        };
        assert_eq!(
            parse(&direct("fanout", true)).unwrap().routes[1].delivery,
            Delivery::Direct
        );
        // Without a sink: the outputs are only written with the input.
        assert_eq!(
            parse(&direct("fanout", false)).unwrap().routes[1].delivery,
            Delivery::Direct
        );
        let err = parse(&direct("proj", true)).unwrap_err();
        assert_eq!(err.key, "routes[1].pipeline[0]");
        assert!(err.reason.contains("keeps kv state"), "{err}");
        assert_eq!(err.line, Some(22), "{err}");
    }
}
