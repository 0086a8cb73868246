//! The route table: event-type globs → named pipelines of plugin stages.
//!
//! Every route whose patterns match an event runs, in the order of the config
//! (like subscriptions on a topic), so one event can feed a projection and a
//! transform at once.

use std::sync::Arc;

use crate::plugin::Plugin;

/// One stage of a pipeline: a loaded plugin version and the state namespace
/// its `kv` calls use (a projection's namespace changes with each rebuild).
#[derive(Debug, Clone)]
pub struct Stage {
    pub plugin: Arc<Plugin>,
    pub namespace: String,
}

/// One route: patterns and the stages of its pipeline, in order.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub patterns: Vec<String>,
    pub stages: Vec<Stage>,
    /// Direct delivery: the route runs inside the ingest request (see
    /// `transport::ingest`), so the pipeline consumer skips it.
    pub direct: bool,
    /// Topic globs its plugins may emit to; `None`, any non-reserved topic.
    pub topics: Option<Vec<String>>,
    /// What happens to a key whose event keeps failing transiently.
    pub on_poison: crate::config::OnPoison,
}

impl Route {
    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| glob_match::glob_match(p, event_type))
    }

    /// Whether the route's plugins may emit to `topic`.
    pub fn allows_topic(&self, topic: &str) -> bool {
        self.topics
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|p| glob_match::glob_match(p, topic)))
    }
}

/// All routes, in config order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The routes that take `event_type`, in order.
    pub fn matching<'a>(&'a self, event_type: &'a str) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes.iter().filter(move |r| r.matches(event_type))
    }

    pub fn is_routed(&self, event_type: &str) -> bool {
        self.matching(event_type).next().is_some()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The same table with every stage running plugin `name` replaced by
    /// `stage`: a swap builds the new table aside and replaces it whole.
    pub fn with_stage(&self, name: &str, stage: &Stage) -> Self {
        let mut routes = self.routes.clone();
        for s in routes.iter_mut().flat_map(|r| r.stages.iter_mut()) {
            if s.plugin.name() == name {
                *s = stage.clone();
            }
        }
        Self { routes }
    }
}

/// Checks an event-type glob: `*` matches within and across dots, `?` one
/// character, `{a,b}` alternatives, `[...]` classes; brackets and braces must
/// balance and the pattern must not be empty.
pub fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    let (mut square, mut brace) = (0i32, 0i32);
    for c in p.chars() {
        match c {
            '[' => square += 1,
            ']' => square -= 1,
            '{' => brace += 1,
            '}' => brace -= 1,
            _ => {}
        }
        if square < 0 || brace < 0 || square > 1 {
            return Err(format!("pattern {p:?} has unbalanced brackets"));
        }
    }
    if square != 0 || brace != 0 {
        return Err(format!("pattern {p:?} has unbalanced brackets"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, patterns: &[&str]) -> Route {
        Route {
            name: name.into(),
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
            stages: vec![],
            direct: false,
            topics: None,
            on_poison: Default::default(),
        }
    }

    #[test]
    fn topic_allow_lists_take_globs_and_default_to_any() {
        let mut r = route("r", &["*"]);
        assert!(r.allows_topic("anything"));
        r.topics = Some(vec!["prisoner.*".into(), "audit".into()]);
        assert!(r.allows_topic("prisoner.moves"));
        assert!(r.allows_topic("audit"));
        assert!(!r.allows_topic("echo"));
        r.topics = Some(vec![]);
        assert!(!r.allows_topic("audit"));
    }

    #[test]
    fn globs_match_event_types() {
        let r = route("r", &["prison-offender-events.prisoner.*"]);
        assert!(r.matches("prison-offender-events.prisoner.released"));
        assert!(r.matches("prison-offender-events.prisoner.received"));
        assert!(!r.matches("probation-case.engagement.created"));
        assert!(!r.matches("prison-offender-events.prisoner"));
        let r = route("r", &["*.prisoner.{received,released}"]);
        assert!(r.matches("prison-offender-events.prisoner.received"));
        assert!(!r.matches("prison-offender-events.prisoner.merged"));
        let exact = route("e", &["a.b"]);
        assert!(exact.matches("a.b") && !exact.matches("a.bc"));
    }

    #[test]
    fn every_matching_route_runs_in_order() {
        let t = RouteTable::new(vec![
            route("a", &["x.*"]),
            route("b", &["y"]),
            route("c", &["*"]),
        ]);
        let names: Vec<_> = t.matching("x.1").map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["a", "c"]);
        assert!(t.is_routed("anything"));
        let t = RouteTable::new(vec![route("b", &["y"])]);
        assert!(!t.is_routed("x"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(check_pattern("a.[b").is_err());
        assert!(check_pattern("a.{b,c").is_err());
        assert!(check_pattern("a]").is_err());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("a.*.{b,c}").is_ok());
    }
}
