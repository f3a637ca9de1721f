//! Test support: a small parser and checker of the Prometheus text exposition format 0.0.4,
//! for every test that renders metrics (the runtime registry's and the agent's scrape).

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One sample line, parsed.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

/// Parses `name{labels} value` or `name value`; `Err` says what is wrong.
pub(crate) fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_len = line
        .char_indices()
        .find(|&(i, c)| {
            !(if i == 0 {
                is_name_start(c)
            } else {
                is_name_char(c)
            })
        })
        .map_or(line.len(), |(i, _)| i);
    if name_len == 0 {
        return Err("no metric name".into());
    }
    let name = line[..name_len].to_owned();
    let mut rest = &line[name_len..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            if !labels.is_empty() {
                rest = rest.strip_prefix(',').ok_or("expected ,")?;
            }
            let len = rest
                .char_indices()
                .find(|&(i, c)| {
                    !(if i == 0 {
                        c.is_ascii_alphabetic() || c == '_'
                    } else {
                        c.is_ascii_alphanumeric() || c == '_'
                    })
                })
                .map_or(rest.len(), |(i, _)| i);
            if len == 0 {
                return Err("no label name".into());
            }
            let label = rest[..len].to_owned();
            rest = rest[len..].strip_prefix("=\"").ok_or("expected =\"")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, '\n') => return Err("raw newline in label value".into()),
                    (_, c) => value.push(c),
                }
            };
            rest = &rest[end + 1..];
            labels.push((label, value));
        }
    }
    let value = rest.strip_prefix(' ').ok_or("expected one space")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            v.parse().map_err(|e| format!("bad value {v}: {e}"))?
        }
        v => return Err(format!("bad value {v:?}")),
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Checks the whole exposition: every non-comment line parses as a sample;
/// `# HELP` and `# TYPE` come once per family, before its samples, and a
/// family's samples are contiguous; histograms are cumulative with
/// `+Inf` == `_count` and have one `_sum` per series.
pub(crate) fn check_exposition(text: &str) {
    assert!(text.is_empty() || text.ends_with('\n'));
    let mut helps = BTreeSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    // (family, labels without le) → (last cumulative, +Inf, count, has sum)
    type Series = (Option<f64>, Option<f64>, Option<f64>, bool);
    let mut histograms: BTreeMap<(String, Vec<(String, String)>), Series> = BTreeMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.splitn(4, ' ');
            assert_eq!(words.next(), Some(""), "{line}");
            let (kind, name) = (words.next().unwrap(), words.next().unwrap());
            match kind {
                "HELP" => {
                    assert!(helps.insert(name.to_owned()), "second HELP: {line}");
                    assert!(!words.next().unwrap_or("").is_empty(), "{line}");
                }
                "TYPE" => {
                    let t = words.next().unwrap();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "second TYPE: {line}"
                    );
                }
                _ => panic!("unexpected comment {line}"),
            }
            if let Some(previous) = current.replace(name.to_owned())
                && previous != name
            {
                finished.insert(previous);
            }
            assert!(!finished.contains(name), "family {name} split: {line}");
            continue;
        }
        let s = parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let family = current.clone().expect("sample before any TYPE");
        let kind = types.get(&family).expect("sample without TYPE");
        assert!(helps.contains(&family), "no HELP for {family}");
        if kind == "histogram" {
            let suffix = s.name.strip_prefix(family.as_str()).unwrap_or_else(|| {
                panic!("{} outside its family {family}", s.name);
            });
            let mut labels = s.labels.clone();
            let le = labels
                .iter()
                .position(|(k, _)| k == "le")
                .map(|i| labels.remove(i).1);
            let entry = histograms
                .entry((family.clone(), labels))
                .or_insert((None, None, None, false));
            match (suffix, le) {
                ("_bucket", Some(le)) => {
                    let previous = entry.0.unwrap_or(0.0);
                    assert!(s.value >= previous, "not cumulative: {line}");
                    entry.0 = Some(s.value);
                    if le == "+Inf" {
                        entry.1 = Some(s.value);
                    } else {
                        let _: f64 = le.parse().unwrap_or_else(|_| panic!("bad le {line}"));
                    }
                }
                ("_sum", None) => entry.3 = true,
                ("_count", None) => entry.2 = Some(s.value),
                _ => panic!("bad histogram line {line}"),
            }
        } else {
            assert_eq!(s.name, family, "sample outside its family");
            assert!(s.value >= 0.0 && s.value.fract() == 0.0, "{line}");
        }
    }
    for (key, (_, inf, count, sum)) in histograms {
        assert!(inf.is_some(), "{key:?} has no +Inf bucket");
        assert_eq!(inf, count, "{key:?}: +Inf != _count");
        assert!(sum, "{key:?} has no _sum");
    }
    for family in types.keys() {
        assert!(helps.contains(family), "TYPE without HELP: {family}");
    }
}
