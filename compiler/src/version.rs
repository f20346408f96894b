//! Workflow versions: how they order, and how `name` or `name@version` picks a workflow.
//!
//! One implementation for every caller (`comfyc render`, `comfyc schema`, the daemon), so a
//! job names the same workflow whichever tool reads it.
//!
//! Ordering, for versions such as `1.10`, `1.2a`, `2.0.0-rc.1`:
//! - `+build` metadata is ignored;
//! - the part before any `-` is split at dots; each part compares by its leading number
//!   (numerically, so `10` > `2`), then by the text after it, where no text comes first
//!   (`1.2` < `1.2a` < `1.2b` < `1.10`); a missing part counts as `0`;
//! - a `-pre-release` comes before the same version without one (`2.0-rc.1` < `2.0`), and
//!   pre-releases compare by their dot-separated parts as semver does;
//! - versions still equal compare as text, so the order is total and deterministic.

use std::cmp::Ordering;

use crate::compile::Workflow;

/// Compares two versions (see the module docs for the rules).
pub fn cmp(a: &str, b: &str) -> Ordering {
    let (a_core, a_pre) = split(a);
    let (b_core, b_pre) = split(b);
    let a_parts: Vec<&str> = a_core.split('.').collect();
    let b_parts: Vec<&str> = b_core.split('.').collect();
    for i in 0..a_parts.len().max(b_parts.len()) {
        let x = a_parts.get(i).copied().unwrap_or("0");
        let y = b_parts.get(i).copied().unwrap_or("0");
        let o = cmp_part(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    let o = match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => cmp_pre(x, y),
    };
    o.then_with(|| a.cmp(b))
}

/// Compares optional versions; an unversioned workflow sorts before every versioned one.
pub fn cmp_opt(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => cmp(a, b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

/// Splits `spec` into a workflow name and an optional version: `txt2img@1.2` → (`txt2img`,
/// `Some("1.2")`).
pub fn parse_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    }
}

/// Finds the workflow `spec` names among `workflows`: `name@version` exactly, or `name`'s
/// highest version by [`cmp`]. The error says what exists, with a "did you mean" when a name
/// is close.
pub fn find_workflow<'a, I>(workflows: I, spec: &str) -> Result<&'a Workflow, String>
where
    I: IntoIterator<Item = &'a Workflow>,
{
    let all: Vec<&Workflow> = workflows.into_iter().collect();
    let (name, version) = parse_spec(spec);
    let best = all
        .iter()
        .copied()
        .filter(|w| w.name == name && version.is_none_or(|v| w.version.as_deref() == Some(v)))
        .max_by(|a, b| cmp_opt(a.version.as_deref(), b.version.as_deref()));
    best.ok_or_else(|| {
        let mut known: Vec<String> = all.iter().map(|w| w.id()).collect();
        known.sort();
        let same_name: Vec<String> = all
            .iter()
            .filter(|w| w.name == name)
            .map(|w| w.id())
            .collect();
        if !same_name.is_empty() {
            return format!(
                "no workflow `{spec}`; `{name}` has: {}",
                same_name.join(", ")
            );
        }
        match crate::catalogue::closest(name, all.iter().map(|w| w.name.as_str())) {
            Some(s) if s != name => format!("no workflow `{spec}`; did you mean `{s}`?"),
            _ if known.is_empty() => {
                format!("no workflow `{spec}`: the repository has no workflow that compiles")
            }
            _ => format!("no workflow `{spec}`; known: {}", known.join(", ")),
        }
    })
}

fn split(v: &str) -> (&str, Option<&str>) {
    let v = v.split('+').next().unwrap_or_default();
    match v.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (v, None),
    }
}

/// A dotted part: its leading number and the text after it.
fn cmp_part(x: &str, y: &str) -> Ordering {
    let (xn, xs) = number_prefix(x);
    let (yn, ys) = number_prefix(y);
    cmp_digits(xn, yn).then_with(|| xs.cmp(ys))
}

fn number_prefix(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// Compares runs of digits of any length as numbers; an empty run is smallest.
fn cmp_digits(x: &str, y: &str) -> Ordering {
    match (x.is_empty(), y.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        _ => {}
    }
    let x = x.trim_start_matches('0');
    let y = y.trim_start_matches('0');
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

/// Semver pre-release precedence: numeric identifiers numerically and below alphanumeric ones;
/// more identifiers win when the shared ones are equal.
fn cmp_pre(x: &str, y: &str) -> Ordering {
    let xs: Vec<&str> = x.split('.').collect();
    let ys: Vec<&str> = y.split('.').collect();
    for (a, b) in xs.iter().zip(&ys) {
        let a_num = !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit());
        let b_num = !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit());
        let o = match (a_num, b_num) {
            (true, true) => cmp_digits(a, b),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => a.cmp(b),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    xs.len().cmp(&ys.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_as_people_read_versions() {
        let mut v = vec![
            "1.10",
            "1.2a",
            "1.2",
            "2.0.0",
            "2.0.0-rc.1",
            "2.0.0-rc.10",
            "2.0.0-rc.2",
            "0.9",
            "1.2b",
            "2.0.0-alpha",
            "10",
            "1.02.5",
            "18446744073709551616.0",
        ];
        v.sort_by(|a, b| cmp(a, b));
        assert_eq!(
            v,
            [
                "0.9",
                "1.2",
                "1.02.5",
                "1.2a",
                "1.2b",
                "1.10",
                "2.0.0-alpha",
                "2.0.0-rc.1",
                "2.0.0-rc.2",
                "2.0.0-rc.10",
                "2.0.0",
                "10",
                "18446744073709551616.0",
            ]
        );
        assert_eq!(cmp("1.2a", "1.10"), Ordering::Less);
        assert_eq!(cmp("1.0+build.5", "1.0+build.6"), Ordering::Less);
        assert_eq!(cmp("1.0", "1.0"), Ordering::Equal);
        assert_eq!(cmp_opt(None, Some("0")), Ordering::Less);
    }
}
