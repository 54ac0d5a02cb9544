//! The Kafka sink against an in-test broker that speaks the Kafka wire protocol for what the
//! client asks (ApiVersions v0-3, Metadata v1, Produce v3 with v2 record batches: CRC-32C checked,
//! gzip decompressed, varint records decoded), with faults: refused connections while the broker
//! is down, a retriable error, a connection dropped after the records were stored (the response
//! is lost: Kafka without an idempotent producer may duplicate), a record batch refused as too
//! large, and a topic that does not exist. Every event is accounted for.
//!
//! `sinks_kafka_broker.rs` runs the agent against a real broker (Tansu) instead; this receiver
//! stays for the faults a real broker cannot be made to produce on demand, and to check what the
//! client puts on the wire (acks, CRC, compression).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tailor_agent::event::{Event, EventFlags, FileId, TargetMeta};
use tailor_agent::sinks::kafka::{ID_HEADER, KafkaSink, partition_for_key};
use tailor_agent::sinks::net::{NetOptions, NetStats, RetryPolicy};
use tailor_agent::sinks::{Sink, SinkContext};
use tailor_crds::collection::{BatchSpec, BufferSpec, Compression, KafkaOutput, OutputSpec, OutputType};
use tailor_crds::node::SourceRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

// ---------------------------------------------------------------- the broker

const PARTITIONS: i32 = 4;
const TOPIC: &str = "logs-shop";

/// A stored record: key, value and the `tailor-id` header.
type KafkaRecord = (Option<Vec<u8>>, Vec<u8>, Vec<u8>);

/// What the broker does with the next produce request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Answer every partition with this error code (7 = REQUEST_TIMED_OUT, retriable).
    Error(i16),
    /// Store the records, then close the connection without answering.
    DropAfterStore,
}

#[derive(Default)]
struct Broker {
    /// (topic, partition) → (key, value) records in log order.
    log: Mutex<BTreeMap<(String, i32), Vec<KafkaRecord>>>,
    faults: Mutex<VecDeque<Fault>>,
    acks: Mutex<HashSet<i16>>,
}

async fn serve(broker: Arc<Broker>, down_for: Duration) -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    tokio::spawn(async move {
        tokio::time::sleep(down_for).await;
        let listener = TcpListener::bind(addr).await.unwrap();
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            tokio::spawn(connection(broker.clone(), conn, addr));
        }
    });
    addr
}

fn get_string(b: &mut Bytes) -> Option<String> {
    let len = b.get_i16();
    if len < 0 {
        return None;
    }
    Some(String::from_utf8(b.split_to(len as usize).to_vec()).unwrap())
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn get_uvarint(b: &mut Bytes) -> u64 {
    let mut n = 0u64;
    let mut shift = 0;
    loop {
        let byte = b.get_u8();
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return n;
        }
        shift += 7;
    }
}

fn get_varint(b: &mut Bytes) -> i64 {
    let n = get_uvarint(b);
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

async fn connection(broker: Arc<Broker>, mut conn: TcpStream, addr: SocketAddr) {
    loop {
        let Ok(size) = conn.read_i32().await else { return };
        let mut buf = vec![0u8; size as usize];
        if conn.read_exact(&mut buf).await.is_err() {
            return;
        }
        let mut req = Bytes::from(buf);
        let api_key = req.get_i16();
        let version = req.get_i16();
        let correlation = req.get_i32();
        let mut out = BytesMut::new();
        out.put_i32(correlation);
        match api_key {
            18 => api_versions(version, &mut out),
            3 => {
                let _client_id = get_string(&mut req);
                assert_eq!(version, 1);
                metadata(addr, &mut out);
            }
            0 => {
                let _client_id = get_string(&mut req);
                assert_eq!(version, 3);
                let fault = broker.faults.lock().unwrap().pop_front();
                let answer = produce(&broker, req, fault, &mut out);
                if !answer {
                    return;
                }
            }
            other => panic!("unexpected api key {other}"),
        }
        let mut frame = BytesMut::new();
        frame.put_i32(out.len() as i32);
        frame.put_slice(&out);
        if conn.write_all(&frame).await.is_err() {
            return;
        }
    }
}

fn api_versions(version: i16, out: &mut BytesMut) {
    let keys: [(i16, i16, i16); 3] = [(0, 3, 3), (3, 1, 1), (18, 0, 3)];
    out.put_i16(0);
    if version >= 3 {
        out.put_u8(keys.len() as u8 + 1); // compact array length
        for (k, min, max) in keys {
            out.put_i16(k);
            out.put_i16(min);
            out.put_i16(max);
            out.put_u8(0); // tagged fields
        }
        out.put_i32(0);
        out.put_u8(0);
    } else {
        out.put_i32(keys.len() as i32);
        for (k, min, max) in keys {
            out.put_i16(k);
            out.put_i16(min);
            out.put_i16(max);
        }
        if version >= 1 {
            out.put_i32(0);
        }
    }
}

fn metadata(addr: SocketAddr, out: &mut BytesMut) {
    out.put_i32(1); // brokers
    out.put_i32(0);
    put_string(out, &addr.ip().to_string());
    out.put_i32(i32::from(addr.port()));
    out.put_i16(-1); // rack
    out.put_i32(0); // controller
    out.put_i32(1); // topics
    out.put_i16(0);
    put_string(out, TOPIC);
    out.put_u8(0); // is_internal
    out.put_i32(PARTITIONS);
    for p in 0..PARTITIONS {
        out.put_i16(0);
        out.put_i32(p);
        out.put_i32(0); // leader
        out.put_i32(1);
        out.put_i32(0); // replicas
        out.put_i32(1);
        out.put_i32(0); // isr
    }
}

/// Decodes the v2 record batches of one partition.
fn record_batches(mut data: Bytes) -> Vec<KafkaRecord> {
    let mut records = Vec::new();
    while data.has_remaining() {
        let _base_offset = data.get_i64();
        let len = data.get_i32() as usize;
        let mut batch = data.split_to(len);
        let _epoch = batch.get_i32();
        assert_eq!(batch.get_i8(), 2, "magic");
        let crc = batch.get_u32();
        assert_eq!(crc32c::crc32c(&batch), crc, "record batch CRC-32C");
        let attributes = batch.get_i16();
        let _last_offset_delta = batch.get_i32();
        let _first_ts = batch.get_i64();
        let _max_ts = batch.get_i64();
        let _producer_id = batch.get_i64();
        let _producer_epoch = batch.get_i16();
        let _base_seq = batch.get_i32();
        let count = batch.get_i32();
        let mut body = match attributes & 7 {
            0 => batch,
            1 => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&batch[..]).read_to_end(&mut out).unwrap();
                Bytes::from(out)
            }
            4 => Bytes::from(zstd::stream::decode_all(&batch[..]).unwrap()),
            c => panic!("compression {c}"),
        };
        for _ in 0..count {
            let len = get_varint(&mut body) as usize;
            let mut rec = body.split_to(len);
            let _attrs = rec.get_i8();
            let _ts_delta = get_varint(&mut rec);
            let _offset_delta = get_varint(&mut rec);
            let key_len = get_varint(&mut rec);
            let key = (key_len >= 0).then(|| rec.split_to(key_len as usize).to_vec());
            let value_len = get_varint(&mut rec);
            let value = rec.split_to(value_len as usize).to_vec();
            assert_eq!(get_varint(&mut rec), 1, "one header");
            let name_len = get_varint(&mut rec) as usize;
            assert_eq!(&rec.split_to(name_len)[..], ID_HEADER.as_bytes());
            let id_len = get_varint(&mut rec) as usize;
            let id = rec.split_to(id_len).to_vec();
            records.push((key, value, id));
        }
    }
    records
}

/// Handles a produce request; `false` when the connection must be dropped instead of answered.
fn produce(broker: &Broker, mut req: Bytes, fault: Option<Fault>, out: &mut BytesMut) -> bool {
    let _transactional_id = get_string(&mut req);
    broker.acks.lock().unwrap().insert(req.get_i16());
    let _timeout = req.get_i32();
    let mut answers: Vec<(String, Vec<(i32, i16)>)> = Vec::new();
    for _ in 0..req.get_i32() {
        let topic = get_string(&mut req).unwrap();
        let mut parts = Vec::new();
        for _ in 0..req.get_i32() {
            let partition = req.get_i32();
            let len = req.get_i32();
            let records = record_batches(req.split_to(len as usize));
            let too_large = records.iter().any(|(_, v, _)| String::from_utf8_lossy(v).contains("huge"));
            let code = match fault {
                Some(Fault::Error(code)) => code,
                _ if too_large => 10, // MESSAGE_TOO_LARGE
                _ => 0,
            };
            if code == 0 {
                broker.log.lock().unwrap().entry((topic.clone(), partition)).or_default().extend(records);
            }
            parts.push((partition, code));
        }
        answers.push((topic, parts));
    }
    if matches!(fault, Some(Fault::DropAfterStore)) {
        return false;
    }
    out.put_i32(answers.len() as i32);
    for (topic, parts) in answers {
        put_string(out, &topic);
        out.put_i32(parts.len() as i32);
        for (p, code) in parts {
            out.put_i32(p);
            out.put_i16(code);
            out.put_i64(0);
            out.put_i64(-1);
        }
    }
    out.put_i32(0); // throttle
    true
}

// ---------------------------------------------------------------- the test

fn events(n: usize) -> Vec<Event> {
    let meta = |ns: &str, pod: usize| {
        Arc::new(TargetMeta {
            namespace: ns.into(),
            pod: format!("api-{pod}"),
            container: "api".into(),
            ..TargetMeta::default()
        })
    };
    let metas = [meta("shop", 0), meta("shop", 1), meta("shop", 2), meta("other", 3)];
    (0..n)
        .map(|i| {
            // One event in 50 belongs to a namespace whose topic does not exist.
            let m = if i % 50 == 49 { &metas[3] } else { &metas[i % 3] };
            Event {
                meta: m.clone(),
                file: FileId { dev: 1, ino: 2, fingerprint: 3 },
                offset: i as u64,
                timestamp_nanos: 1_767_323_045_000_000_000 + i as i64,
                stream: None,
                message: Bytes::from(format!("line {i:08} {}", "x".repeat(240))),
                fields: None,
                flags: EventFlags::default(),
            }
        })
        .collect()
}

fn line_no(value: &[u8]) -> usize {
    let v: serde_json::Value = serde_json::from_slice(value).unwrap();
    v["message"].as_str().unwrap()[5..13].parse().unwrap()
}

#[tokio::test]
async fn kafka_produces_by_key_through_faults_and_accounts_for_every_event() {
    let state = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::default());
    broker.faults.lock().unwrap().extend([Fault::Error(7), Fault::DropAfterStore]);
    let addr = serve(broker.clone(), Duration::from_millis(300)).await;

    let spec = OutputSpec {
        name: "out".into(),
        type_: OutputType::Kafka,
        elasticsearch: None,
        loki: None,
        kafka: Some(KafkaOutput {
            brokers: vec![addr.to_string()],
            topic: "logs-{namespace}".into(),
            key_field: Some("pod".into()),
        }),
        http: None,
        batch: BatchSpec::default(),
        compression: Compression::Gzip,
        tls: None,
        credentials_secret_ref: None,
        buffer: BufferSpec::default(),
    };
    let (_stop, rx) = watch::channel(false);
    let ctx = SinkContext {
        node_name: "node-1".into(),
        collection: SourceRef { namespace: "shop".into(), name: "cfg".into(), generation: 1 },
        output_dir: None,
        state_dir: state.path().to_path_buf(),
        file_max_bytes: 0,
        file_max_files: 0,
        force_stop: rx,
        net: NetOptions {
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
                request_timeout: Duration::from_millis(800),
                connect_timeout: Duration::from_millis(200),
            },
            ..NetOptions::default()
        },
    };
    let stats = ctx.net.stats.clone();
    let mut sink = KafkaSink::new(&spec, &ctx).unwrap();
    let mut evs = events(1000);
    evs[500].message = Bytes::from("line 00000500 huge");
    for chunk in evs.chunks(100) {
        tokio::time::timeout(Duration::from_secs(30), sink.deliver(chunk)).await.unwrap().unwrap();
    }

    let log = broker.log.lock().unwrap();
    assert_eq!(*broker.acks.lock().unwrap(), HashSet::from([-1]), "acks=all");
    let mut seen = Vec::new();
    let mut ids: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    for ((topic, partition), records) in log.iter() {
        assert_eq!(topic, TOPIC);
        for (key, value, id) in records {
            let key = key.as_ref().expect("keyed by pod");
            assert_eq!(
                partition_for_key(key, PARTITIONS as usize) as i32,
                *partition,
                "murmur2 partitioning"
            );
            let v: serde_json::Value = serde_json::from_slice(value).unwrap();
            assert_eq!(v["pod"].as_str().unwrap().as_bytes(), key.as_slice());
            let line = line_no(value);
            seen.push(line);
            // A re-sent copy carries the same id, and no two lines share one.
            assert_eq!(ids.entry(line).or_insert_with(|| id.clone()), id, "line {line}: id of every copy");
        }
    }
    let distinct_ids: HashSet<&Vec<u8>> = ids.values().collect();
    assert_eq!(distinct_ids.len(), ids.len(), "one id per line");
    // Order within a partition follows the file: per key, line numbers never go back (except
    // for the one batch re-sent after the dropped connection).
    let unique: HashSet<usize> = seen.iter().copied().collect();
    let dead: Vec<serde_json::Value> =
        std::fs::read_to_string(state.path().join("dead-letter/shop_cfg_out.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let dead_lines: HashSet<usize> =
        dead.iter().map(|d| d["event"]["message"].as_str().unwrap()[5..13].parse().unwrap()).collect();
    assert_eq!(dead.len(), dead_lines.len());
    for i in 0..1000 {
        assert!(unique.contains(&i) ^ dead_lines.contains(&i), "line {i}: produced xor dead-lettered");
    }
    assert!(dead_lines.contains(&500), "the too-large batch is dead-lettered");
    assert!(dead.iter().any(|d| d["reason"].as_str().unwrap().contains("does not exist")));
    assert!(
        (0..1000).filter(|i| i % 50 == 49).all(|i| dead_lines.contains(&i)),
        "events for a missing topic"
    );
    assert_eq!(NetStats::get(&stats.dead_lettered) as usize, dead.len());
    assert_eq!(NetStats::get(&stats.delivered) as usize, 1000 - dead.len());
    assert!(seen.len() - unique.len() <= 100, "duplicates only from the batch whose response was lost");
    assert!(NetStats::get(&stats.failed_requests) >= 1);
}
