//! Looking up a named field of an event: for Loki labels, Kafka keys and topics.

use std::borrow::Cow;

use tailor_crds::node::StdStream;

use crate::event::Event;

/// The value of field `name` of an event, as text. Names, in this order:
/// - the Kubernetes metadata: `namespace`, `pod`, `pod_uid`, `container`, `node`, `image`,
///   `workload`, `stream` (also with a `kubernetes.` prefix, as other agents name them);
/// - a field a parser extracted (strings as they are, other scalars and objects as JSON);
/// - a field the resource attached (labels, annotations, env, static fields).
pub fn lookup<'a>(ev: &'a Event, name: &str) -> Option<Cow<'a, str>> {
    let short = name.strip_prefix("kubernetes.").unwrap_or(name);
    let meta = &*ev.meta;
    let known = match short {
        "namespace" => Some(meta.namespace.as_str()),
        "pod" => Some(meta.pod.as_str()),
        "pod_uid" => Some(meta.pod_uid.as_str()),
        "container" => Some(meta.container.as_str()),
        "node" => Some(meta.node.as_str()),
        "image" => Some(meta.image.as_str()),
        "workload" => return meta.workload.as_deref().map(Cow::Borrowed),
        "stream" => return ev.stream.map(|s| Cow::Borrowed(stream_name(s))),
        _ => None,
    };
    if let Some(v) = known {
        return Some(Cow::Borrowed(v));
    }
    if let Some(v) = ev.fields.as_ref().and_then(|f| f.get(name)) {
        return match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_str())),
            other => Some(Cow::Owned(other.to_string())),
        };
    }
    meta.fields.get(name).map(|s| Cow::Borrowed(s.as_str()))
}

pub fn stream_name(s: StdStream) -> &'static str {
    match s {
        StdStream::Stdout => "stdout",
        StdStream::Stderr => "stderr",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::net::testutil::sample_event;

    #[test]
    fn looks_up_metadata_parsed_and_attached_fields() {
        let ev = sample_event(7);
        assert_eq!(lookup(&ev, "namespace").unwrap(), "shop");
        assert_eq!(lookup(&ev, "kubernetes.container").unwrap(), "api");
        assert_eq!(lookup(&ev, "stream").unwrap(), "stdout");
        assert_eq!(lookup(&ev, "level").unwrap(), "info");
        assert_eq!(lookup(&ev, "status").unwrap(), "200");
        assert_eq!(lookup(&ev, "tenant").unwrap(), "t-1");
        assert_eq!(lookup(&ev, "absent"), None);
        assert_eq!(lookup(&ev, "workload").unwrap(), "Deployment/api");
    }
}
