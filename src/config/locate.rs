//! Finding a dotted config key (`routes[1].pipeline`, `plugins.p.timeout_ms`)
//! in the file's text, for errors found after deserialisation, when the value
//! at fault carries no span (plain numbers, strings, values left at default).

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Byte offset of the deepest part of `key` written in `text`: the key itself,
/// or, for a value left at its default, the table it would go in. `None` when
/// not even the first part is in the file.
pub(super) fn offset_of_key(text: &str, key: &str) -> Option<usize> {
    let doc = DeTable::parse(text).ok()?;
    let parts = split(key);
    find_in_table(doc.get_ref(), &parts)
}

#[derive(Debug, PartialEq)]
enum Part<'k> {
    Name(&'k str),
    Index(usize),
}

fn split(key: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    for dotted in key.split('.') {
        let (name, mut rest) = dotted.split_once('[').map_or((dotted, ""), |(n, r)| (n, r));
        parts.push(Part::Name(name));
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                parts.push(Part::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    parts
}

/// Table keys may themselves contain dots (plugin and sink names allow
/// them), so the longest run of name parts that is a key wins.
fn find_in_table(table: &DeTable<'_>, parts: &[Part<'_>]) -> Option<usize> {
    let names = parts
        .iter()
        .take_while(|p| matches!(p, Part::Name(_)))
        .count();
    (1..=names).rev().find_map(|n| {
        let joined = parts[..n]
            .iter()
            .filter_map(|p| match p {
                Part::Name(s) => Some(*s),
                Part::Index(_) => None,
            })
            .collect::<Vec<_>>()
            .join(".");
        let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == joined)?;
        Some(find_in_value(v, &parts[n..]).unwrap_or(k.span().start))
    })
}

fn find_in_value(value: &Spanned<DeValue<'_>>, parts: &[Part<'_>]) -> Option<usize> {
    match (value.get_ref(), parts.first()?) {
        (DeValue::Table(t), Part::Name(_)) => find_in_table(t, parts),
        (DeValue::Array(a), Part::Index(i)) => {
            let item = a.get(*i)?;
            Some(find_in_value(item, &parts[1..]).unwrap_or(item.span().start))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_names_and_indexes() {
        use Part::*;
        assert_eq!(
            split("routes[1].pipeline[0]"),
            [Name("routes"), Index(1), Name("pipeline"), Index(0)]
        );
        assert_eq!(split("a.b"), [Name("a"), Name("b")]);
    }

    #[test]
    fn the_deepest_written_part_is_found() {
        let text = "[router]\nworkers = 0\n\n[plugins.\"a.b\"]\npath = \"p\"\n\n[[routes]]\nname = \"x\"\n\n[[routes]]\nname = \"y\"\n";
        let line = |key| offset_of_key(text, key).map(|o| text[..o].matches('\n').count() + 1);
        assert_eq!(line("router.workers"), Some(2));
        assert_eq!(line("router.batch_size"), Some(1));
        assert_eq!(line("plugins.a.b.instances"), Some(4));
        assert_eq!(line("routes[1].name"), Some(11));
        assert_eq!(line("ingest.topic"), None);
    }
}
