//! Backup destinations: a policy's layout rendered for one container, relative to the
//! platform's backup root and safe to join to it.

/// Placeholders a layout may use.
pub const PLACEHOLDERS: [&str; 5] = ["namespace", "workload", "pod", "container", "node"];

/// A layout that cannot be rendered safely.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("layout {0:?} is empty")]
    Empty(String),
    #[error("layout {0:?} must be relative to the backup root")]
    Absolute(String),
    #[error("layout {0:?} must not contain '.' or '..' segments")]
    DotSegment(String),
    #[error(
        "layout {layout:?} uses unknown placeholder {{{name}}} (known: namespace, workload, pod, container, node)"
    )]
    UnknownPlaceholder { layout: String, name: String },
    #[error("layout {0:?} has an unclosed '{{'")]
    Unclosed(String),
    #[error("layout {layout:?} contains {ch:?}; use letters, digits, '.', '_', '-', '/' and placeholders")]
    BadCharacter { layout: String, ch: char },
}

/// The values substituted into a layout.
#[derive(Clone, Copy, Debug)]
pub struct LayoutValues<'a> {
    pub namespace: &'a str,
    /// The owning workload's name, else the container name.
    pub workload: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub node: &'a str,
}

/// Checks a layout without values.
pub fn validate_layout(layout: &str) -> Result<(), LayoutError> {
    let v = LayoutValues { namespace: "n", workload: "w", pod: "p", container: "c", node: "x" };
    render_layout(layout, &v).map(|_| ())
}

/// Renders a layout: each value is sanitised into one safe path segment, empty segments are
/// dropped, and the result is relative with no `.`/`..` segment.
pub fn render_layout(layout: &str, v: &LayoutValues<'_>) -> Result<String, LayoutError> {
    if layout.starts_with('/') {
        return Err(LayoutError::Absolute(layout.into()));
    }
    let mut segments: Vec<String> = Vec::new();
    for raw in layout.split('/') {
        if raw == "." || raw == ".." {
            return Err(LayoutError::DotSegment(layout.into()));
        }
        let mut seg = String::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            literal(layout, &rest[..open], &mut seg)?;
            let close = rest[open..].find('}').ok_or_else(|| LayoutError::Unclosed(layout.into()))? + open;
            let name = &rest[open + 1..close];
            let value = match name {
                "namespace" => v.namespace,
                "workload" => v.workload,
                "pod" => v.pod,
                "container" => v.container,
                "node" => v.node,
                _ => {
                    return Err(LayoutError::UnknownPlaceholder { layout: layout.into(), name: name.into() });
                }
            };
            sanitise_into(value, &mut seg);
            rest = &rest[close + 1..];
        }
        literal(layout, rest, &mut seg)?;
        match seg.as_str() {
            "" => {}
            "." | ".." => segments.push("_".repeat(seg.len())),
            _ => segments.push(seg),
        }
    }
    if segments.is_empty() {
        return Err(LayoutError::Empty(layout.into()));
    }
    Ok(segments.join("/"))
}

fn literal(layout: &str, text: &str, out: &mut String) -> Result<(), LayoutError> {
    if let Some(ch) = text.chars().find(|c| !safe_char(*c)) {
        return Err(LayoutError::BadCharacter { layout: layout.into(), ch });
    }
    out.push_str(text);
    Ok(())
}

fn safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Characters outside `[A-Za-z0-9._-]` become `_`; an empty value becomes `_`.
fn sanitise_into(value: &str, out: &mut String) {
    if value.is_empty() {
        out.push('_');
    }
    out.extend(value.chars().map(|c| if safe_char(c) { c } else { '_' }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V: LayoutValues<'static> =
        LayoutValues { namespace: "shop", workload: "web", pod: "web-7d-x1", container: "app", node: "n1" };

    #[test]
    fn default_layout() {
        let layout = tailor_crds::backup::DEFAULT_LAYOUT;
        assert_eq!(render_layout(layout, &V).unwrap(), "shop/web/web-7d-x1/app");
    }

    #[test]
    fn literals_and_empty_segments() {
        assert_eq!(render_layout("backups//{node}/{pod}.d/", &V).unwrap(), "backups/n1/web-7d-x1.d");
        assert_eq!(render_layout("{namespace}-{container}", &V).unwrap(), "shop-app");
    }

    #[test]
    fn hostile_layouts_are_refused() {
        assert_eq!(render_layout("/etc/{pod}", &V), Err(LayoutError::Absolute("/etc/{pod}".into())));
        assert!(matches!(render_layout("a/../{pod}", &V), Err(LayoutError::DotSegment(_))));
        assert!(matches!(render_layout("./{pod}", &V), Err(LayoutError::DotSegment(_))));
        assert!(matches!(render_layout("{secret}", &V), Err(LayoutError::UnknownPlaceholder { .. })));
        assert!(matches!(render_layout("{pod", &V), Err(LayoutError::Unclosed(_))));
        assert!(matches!(render_layout("a b/{pod}", &V), Err(LayoutError::BadCharacter { ch: ' ', .. })));
        assert!(matches!(render_layout("", &V), Err(LayoutError::Empty(_))));
        assert!(matches!(render_layout("//", &V), Err(LayoutError::Absolute(_))));
        assert!(matches!(render_layout("a/./", &V), Err(LayoutError::DotSegment(_))));
        assert!(validate_layout("{namespace}/{workload}/{pod}/{container}").is_ok());
    }

    #[test]
    fn hostile_values_are_sanitised() {
        let v = LayoutValues { pod: "../../etc", workload: "", container: "..", ..V };
        assert_eq!(render_layout("{workload}/{pod}/{container}", &v).unwrap(), "_/.._.._etc/__");
    }

    proptest! {
        /// Whatever the values, the destination is relative, has no empty/`.`/`..` segment and
        /// only safe characters.
        #[test]
        fn destinations_are_always_safe(ns in ".{0,8}", w in ".{0,8}", p in ".{0,8}", c in ".{0,8}") {
            let v = LayoutValues { namespace: &ns, workload: &w, pod: &p, container: &c, node: "n" };
            let out = render_layout(tailor_crds::backup::DEFAULT_LAYOUT, &v).unwrap();
            prop_assert!(!out.starts_with('/'));
            for seg in out.split('/') {
                prop_assert!(!seg.is_empty() && seg != "." && seg != "..");
                prop_assert!(seg.chars().all(safe_char));
            }
        }
    }
}
