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

/// An event-type or topic glob, with `glob_match`'s meaning. The shapes
/// routes almost always use (a whole name, `prefix*`, `*suffix`, `*`) are
/// recognised once, when the route table is built, and matched by comparing
/// strings: `glob_match` costs thousands of instructions per call, and each
/// event is matched against every route.
#[derive(Debug, Clone)]
pub struct Glob {
    text: String,
    shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// No special character: the name itself.
    Exact,
    /// `lit*`: starts with `lit`, then anything but a path separator.
    Prefix,
    /// `*lit`: anything but a path separator, then ends with `lit`.
    Suffix,
    /// `*`: anything but a path separator.
    Any,
    /// Everything else goes to `glob_match`.
    General,
}

impl Glob {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        // `/` is a separator to glob_match (a `*` stops at it), `!` negates
        // at the start, `\` escapes: leave all of those to it.
        let special = |b: u8| b"*?[]{}\\!/".contains(&b);
        let plain = |s: &str| !s.bytes().any(special);
        let shape = if plain(&text) {
            Shape::Exact
        } else if text == "*" {
            Shape::Any
        } else if text
            .strip_suffix('*')
            .is_some_and(|l| !l.is_empty() && plain(l))
        {
            Shape::Prefix
        } else if text
            .strip_prefix('*')
            .is_some_and(|l| !l.is_empty() && plain(l))
        {
            Shape::Suffix
        } else {
            Shape::General
        };
        Glob { text, shape }
    }

    pub fn matches(&self, name: &str) -> bool {
        let no_separator = |s: &str| !s.contains('/');
        let t = self.text.as_str();
        match self.shape {
            Shape::Exact => name == t,
            Shape::Any => no_separator(name),
            Shape::Prefix => name
                .strip_prefix(&t[..t.len() - 1])
                .is_some_and(no_separator),
            Shape::Suffix => name.strip_suffix(&t[1..]).is_some_and(no_separator),
            Shape::General => glob_match::glob_match(t, name),
        }
    }
}

/// One route: patterns and the stages of its pipeline, in order.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub patterns: Vec<Glob>,
    pub stages: Vec<Stage>,
    /// Direct delivery: the route runs inside the ingest request (see
    /// `transport::ingest`), so the pipeline consumer skips it.
    pub direct: bool,
    /// Topic globs its plugins may emit to; `None`, any non-reserved topic.
    pub topics: Option<Vec<Glob>>,
    /// What happens to a key whose event keeps failing transiently.
    pub on_poison: crate::config::OnPoison,
}

impl Route {
    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(event_type))
    }

    /// Whether the route's plugins may emit to `topic`.
    pub fn allows_topic(&self, topic: &str) -> bool {
        self.topics
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|p| p.matches(topic)))
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
            patterns: patterns.iter().map(|s| Glob::new(*s)).collect(),
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
        r.topics = Some(vec![Glob::new("prisoner.*"), Glob::new("audit")]);
        assert!(r.allows_topic("prisoner.moves"));
        assert!(r.allows_topic("audit"));
        assert!(!r.allows_topic("echo"));
        r.topics = Some(vec![]);
        assert!(!r.allows_topic("audit"));
    }

    /// Every shape matched without `glob_match` answers as it does, on
    /// names with and without separators, empty ones and near misses.
    #[test]
    fn fast_shapes_agree_with_glob_match() {
        // Whitespace-separated, plus the empty pattern and name.
        let patterns = r"* a a.b a.* *.b a.b* *b prisoner.* *.released a*b ** a/* */b a.{b,c} a.? !a.*
            a\* [ab].c *.* a** **b a,b *,b";
        let names = "a b a.b a.c a. .b a.bc ab a.b.c a/b a.b/c x/a.b prisoner.received prisoner.
            prisoner p.released released a* c.b a,b x,b";
        let patterns: Vec<&str> = patterns.split_whitespace().chain([""]).collect();
        let names: Vec<&str> = names.split_whitespace().chain([""]).collect();
        let mut shapes = std::collections::BTreeSet::new();
        for &p in &patterns {
            let g = Glob::new(p);
            shapes.insert(format!("{:?}", g.shape));
            for &n in &names {
                assert_eq!(
                    g.matches(n),
                    glob_match::glob_match(p, n),
                    "pattern {p:?}, name {n:?}"
                );
            }
        }
        assert_eq!(shapes.len(), 5, "every shape is exercised: {shapes:?}");
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
