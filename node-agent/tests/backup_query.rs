//! Finding the originals: `backups list|cat|grep` and the authenticated HTTP API, over a backup
//! made by the engine from real files; path traversal and symlink attempts get nothing.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tailor_agent::backup::cli::{BackupsCommand, Select};
use tailor_agent::backup::fixture::{FakePod, node_backup};
use tailor_agent::backup::query::{self, Filter};
use tailor_agent::backup::{AgentResolver, Engine, EngineSettings, PassKind, api};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "0123456789abcdef-test-token";

fn append(p: &Path, b: &[u8]) {
    OpenOptions::new().create(true).append(true).open(p).unwrap().write_all(b).unwrap();
}

fn lines(tag: &str, n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        writeln!(v, "{tag} line {i} {}", if i % 10 == 0 { "ERROR boom" } else { "ok" }).unwrap();
    }
    v
}

/// Two replicas, one with a rotated (compressed) file; returns (tempdir, backup root, sources).
fn make_backup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    let backup = dir.path().join("backup");
    let pods = [FakePod::new("shop", "web-1", "app"), FakePod::new("shop", "web-2", "app")];
    let nb = node_backup("shop", "keep", &pods);
    let mut s = EngineSettings::new(&backup, dir.path().join("state"), "node-1");
    s.close_after = Duration::ZERO;
    let mut e = Engine::new(s, Arc::new(AgentResolver::new(host.clone()))).unwrap();
    e.apply(Some(1), vec![nb]);
    let d1 = pods[0].host_dir(&host);
    append(&d1.join("0.log"), &lines("web-1 first", 100));
    append(&pods[1].host_dir(&host).join("0.log"), &lines("web-2", 50));
    e.pass(PassKind::Event);
    fs::rename(d1.join("0.log"), d1.join("0.log.20260101-000000")).unwrap();
    append(&d1.join("0.log"), &lines("web-1 second", 20));
    e.pass(PassKind::Sweep);
    (dir, backup)
}

#[test]
fn list_cat_grep_read_the_backup_root() {
    let (_dir, backup) = make_backup();
    let all = query::list(&backup, &Filter::default()).unwrap();
    let files: Vec<(String, String)> = all.iter().map(|e| (e.pod.clone(), e.file.clone())).collect();
    assert_eq!(
        files,
        vec![
            ("web-1".to_string(), "0.log.20260101-000000.zst".to_string()),
            ("web-1".to_string(), "0.log".to_string()),
            ("web-2".to_string(), "0.log".to_string())
        ]
    );
    let web1 = Filter { namespace: Some("shop".into()), pod: Some("web-1".into()), ..Default::default() };
    let entries = query::list(&backup, &web1).unwrap();
    let root = tailor_agent::backup::dest::DestRoot::open(&backup).unwrap();
    let mut out = Vec::new();
    query::cat(&root, &entries, &mut out).unwrap();
    let mut want = lines("web-1 first", 100);
    want.extend(lines("web-1 second", 20));
    assert_eq!(out, want);
    let mut out = Vec::new();
    let re = regex::bytes::Regex::new("ERROR").unwrap();
    assert_eq!(query::grep(&root, &entries, &re, 1000, &mut out).unwrap(), 12);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("shop/web-1/app/0.log.20260101-000000.zst:1:web-1 first line 0 ERROR")
    );
    let future = Filter { since: Some("2999-01-01T00:00:00Z".into()), ..Default::default() };
    assert!(query::list(&backup, &future).unwrap().is_empty());
    assert!(query::list(&backup, &Filter { since: Some("nonsense".into()), ..Default::default() }).is_err());
}

#[tokio::test]
async fn cli_commands_print_what_they_find() {
    let (_dir, backup) = make_backup();
    let select = |pod: &str| Select {
        backup_root: backup.clone(),
        namespace: Some("shop".into()),
        pod: Some(pod.into()),
        container: None,
        policy: None,
        file: None,
        since: None,
        until: None,
    };
    let mut out = Vec::new();
    tailor_agent::backup::cli::run(BackupsCommand::Cat { select: select("web-2") }, &mut out).await.unwrap();
    assert_eq!(out, lines("web-2", 50));
    let mut out = Vec::new();
    tailor_agent::backup::cli::run(BackupsCommand::List { select: select("web-1"), json: false }, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("shop\tweb-1\tapp\t0.log.20260101-000000.zst"));
}

/// A minimal HTTP/1.1 GET (the response body de-chunked).
async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[head_end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    (status, body)
}

#[tokio::test]
async fn http_api_needs_the_token_and_never_leaves_the_root() {
    let (dir, backup) = make_backup();
    // Hostile content under the root: a symlinked directory to outside with a manifest, and a
    // symlink named like a backup file.
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "top secret\n").unwrap();
    fs::write(
        outside.join(".tailor-backup.json"),
        r#"{"version":1,"origins":[{"namespace":"shop","pod":"evil","container":"c","policy":"p","node":"n","files":["secret"]}]}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, backup.join("shop/evil")).unwrap();
    let web2 = backup.join("shop/web/web-2/app");
    std::os::unix::fs::symlink(outside.join("secret"), web2.join("0.log.1")).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api::router(backup.clone(), TOKEN.as_bytes().to_vec());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    assert_eq!(get(addr, "/backups", None).await.0, 401);
    assert_eq!(get(addr, "/backups", Some("wrong-token-wrong-token")).await.0, 401);
    let (status, body) = get(addr, "/backups?namespace=shop", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let listed: Vec<query::Entry> = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|e| e.pod != "evil" && e.file != "0.log.1"));

    let (status, body) =
        get(addr, "/backups/content?namespace=shop&pod=web-2&container=app", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(body, lines("web-2", 50));
    let (status, body) = get(addr, "/backups/grep?pod=web-1&regex=second.*ERROR", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(body).unwrap().lines().count(), 2);

    for hostile in [
        "/backups/content?file=..%2F..%2F..%2Fetc%2Fpasswd",
        "/backups/content?namespace=..&pod=..&file=passwd",
        "/backups/content?pod=evil",
        "/backups/content?file=0.log.1",
    ] {
        let (status, body) = get(addr, hostile, Some(TOKEN)).await;
        assert_eq!(status, 404, "{hostile}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(get(addr, "/backups/content?path=/etc/passwd", Some(TOKEN)).await.0, 400);
    assert_eq!(get(addr, "/backups/grep?regex=(", Some(TOKEN)).await.0, 400);
    server.abort();
}
