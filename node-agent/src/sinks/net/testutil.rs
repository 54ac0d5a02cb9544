//! Fixtures for the sinks' unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tailor_crds::node::StdStream;

use crate::event::{Event, EventFlags, FileId, TargetMeta};

pub(crate) fn sample_event(offset: u64) -> Event {
    let meta = TargetMeta {
        target: "pod/shop/api-1/api".into(),
        node: "node-1".into(),
        namespace: "shop".into(),
        pod: "api-1".into(),
        pod_uid: "uid-1".into(),
        container: "api".into(),
        image: "shop/api:1".into(),
        workload: Some("Deployment/api".into()),
        fields: BTreeMap::from([("tenant".into(), "t-1".into()), ("level".into(), "shadowed".into())]),
    };
    let mut parsed = serde_json::Map::new();
    parsed.insert("level".into(), "info".into());
    parsed.insert("status".into(), 200.into());
    parsed.insert("kubernetes".into(), "spoof".into());
    Event {
        meta: Arc::new(meta),
        file: FileId { dev: 1, ino: 2, fingerprint: 3 },
        offset,
        timestamp_nanos: 1_767_323_045_123_456_789,
        stream: Some(StdStream::Stdout),
        message: Bytes::from_static(b"GET /cart \"ok\""),
        fields: Some(parsed),
        flags: EventFlags::default(),
    }
}
