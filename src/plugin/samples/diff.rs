//! A structural diff of two JSON values, one line per difference, each naming
//! the path: `outputs[0].data.status: expected "IN", got "OUT"`. Easier to read
//! than a text diff when the payloads are long one-line JSON.

use serde_json::Value;

/// The differences between `expected` and `actual` under `path`.
pub fn diff(path: &str, expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(path, expected, actual, &mut out);
    out
}

fn walk(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = join(path, k);
                match a.get(k) {
                    Some(av) => walk(&p, ev, av, out),
                    None => out.push(format!("{p}: missing (expected {})", short(ev))),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) {
                    out.push(format!("{}: unexpected {}", join(path, k), short(av)));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                walk(&format!("{path}[{i}]"), ev, av, out);
            }
            if e.len() != a.len() {
                out.push(format!(
                    "{path}: expected {} item(s), got {}",
                    e.len(),
                    a.len()
                ));
                for (i, ev) in e.iter().enumerate().skip(a.len()) {
                    out.push(format!("{path}[{i}]: missing (expected {})", short(ev)));
                }
                for (i, av) in a.iter().enumerate().skip(e.len()) {
                    out.push(format!("{path}[{i}]: unexpected {}", short(av)));
                }
            }
        }
        (e, a) if e == a => {}
        (e, a) => out.push(format!("{path}: expected {}, got {}", short(e), short(a))),
    }
}

fn join(path: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), simple) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", Value::String(key.to_string())),
    }
}

/// Compact JSON, cut so one difference stays one readable line.
fn short(v: &Value) -> String {
    const MAX: usize = 200;
    let s = v.to_string();
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_difference_by_path() {
        let e = json!({"a": 1, "b": {"c": [1, 2]}, "gone": true, "x y": 1});
        let a = json!({"a": 2, "b": {"c": [1]}, "new": "n", "x y": 1});
        let d = diff("out", &e, &a);
        assert_eq!(
            d,
            vec![
                "out.a: expected 1, got 2",
                "out.b.c: expected 2 item(s), got 1",
                "out.b.c[1]: missing (expected 2)",
                "out.gone: missing (expected true)",
                "out.new: unexpected \"n\"",
            ]
        );
        assert!(diff("", &e, &e).is_empty());
    }

    #[test]
    fn long_values_are_cut_at_a_char_boundary() {
        let long = Value::String("é".repeat(300));
        let d = diff("", &long, &json!(1));
        assert!(d[0].ends_with(", got 1"), "{}", d[0]);
        assert!(d[0].contains('…'));
    }
}
