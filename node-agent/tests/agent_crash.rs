//! The delivery contract end to end: real writer processes (python3) write numbered CRI lines
//! into many files while rotating them (rename and copy-truncate); the agent is stopped at random
//! moments, alternately with SIGKILL and SIGTERM, and restarted. Every line must come out at
//! least once; nothing a run stopped by SIGTERM delivered comes out again, and what a run
//! stopped by SIGKILL delivered comes out again at most for its last checkpoint period.

mod agent_support;

use agent_support::agent_command;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WRITERS: usize = 8;
const LINES_PER_WRITER: u64 = 10_000;
const RATE_PER_WRITER: u64 = 600;
const ROTATE_EVERY: u64 = 1_500;
const STOPS: usize = 44;
const CHECKPOINT_INTERVAL_MS: u64 = 300;

const WRITER: &str = r#"
import os, sys, shutil, time
d, mode, writer, total, rate, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
path = os.path.join(d, "0.log")
f = open(path, "ab", buffering=0)
start = time.time()
rotation = 0
for i in range(total):
    if i and i % every == 0:
        rotation += 1
        if mode == "rename":
            f.close()
            os.rename(path, "%s.%d" % (path, rotation))
            f = open(path, "ab", buffering=0)
        else:
            shutil.copyfile(path, "%s.%d" % (path, rotation))
            os.truncate(path, 0)
    f.write(b"2024-05-01T12:00:00.000000000Z stdout F w%d %08d padding-padding-padding-padding\n" % (writer, i))
    due = start + (i + 1) / rate
    now = time.time()
    if due > now:
        time.sleep(due - now)
f.close()
"#;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn config(n: usize) -> String {
    let mut targets = String::new();
    for i in 0..n {
        targets.push_str(&format!(
            "    - pod: {{namespace: ns, name: p{i}, uid: u{i}}}\n      container: {{name: app}}\n      inputs:\n      - kind: stdio\n        root: {{kind: podLogs, hostDir: /var/log/pods/ns_p{i}_u{i}/app}}\n        path: \"0.log*\"\n"
        ));
    }
    format!(
        "apiVersion: logging.tailor.dev/v1alpha1\nkind: NodeLogConfig\nmetadata: {{name: n1, generation: 1}}\nspec:\n  formatVersion: 1\n  collections:\n  - source: {{namespace: ns, name: lcc}}\n    outputs: [{{name: out, type: file, batch: {{maxEvents: 500, timeoutMs: 50}}}}]\n    targets:\n{targets}"
    )
}

fn start_agent(dir: &Path) -> Child {
    let interval = format!("{CHECKPOINT_INTERVAL_MS}ms");
    agent_command(dir, "n1", &["--checkpoint-interval", &interval])
        .args(["--rescan-interval", "200ms", "--file-max-bytes", "1Gi", "--output-dir"])
        .arg(dir.join("out"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent starts")
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "agent did not stop within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn output_files(dir: &Path) -> Vec<PathBuf> {
    let out = dir.join("out/ns/lcc/out");
    let mut v: Vec<PathBuf> =
        fs::read_dir(out).map(|r| r.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn sizes(dir: &Path) -> HashMap<PathBuf, u64> {
    output_files(dir).into_iter().map(|p| (p.clone(), fs::metadata(&p).unwrap().len())).collect()
}

/// `(writer, line)` of every complete output line, in order, per output file segment.
fn parse_lines(bytes: &[u8]) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    for raw in bytes.split(|b| *b == b'\n') {
        // A SIGKILL may tear the last line of a run; the next run's first line follows it.
        let text = String::from_utf8_lossy(raw);
        let Some(at) = text.rfind("{\"@timestamp\"") else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text[at..]) else { continue };
        let msg = v["message"].as_str().unwrap();
        let mut parts = msg.split(' ');
        let w: usize = parts.next().unwrap()[1..].parse().unwrap();
        let n: u64 = parts.next().unwrap().parse().unwrap();
        out.push((w, n));
    }
    out
}

#[test]
fn every_line_survives_sigkill_and_sigterm_while_files_rotate() {
    let python = Command::new("python3").arg("--version").output();
    assert!(python.is_ok_and(|o| o.status.success()), "python3 is needed for the writer processes");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for i in 0..WRITERS {
        fs::create_dir_all(dir.join(format!("host/var/log/pods/ns_p{i}_u{i}/app"))).unwrap();
    }
    fs::create_dir_all(dir.join("state")).unwrap();
    fs::write(dir.join("config.yaml"), config(WRITERS)).unwrap();
    fs::write(dir.join("writer.py"), WRITER).unwrap();

    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let mut writers: Vec<Child> = (0..WRITERS)
        .map(|i| {
            let mode = if i % 2 == 0 { "rename" } else { "copytruncate" };
            Command::new("python3")
                .arg(dir.join("writer.py"))
                .arg(dir.join(format!("host/var/log/pods/ns_p{i}_u{i}/app")))
                .args([mode, &i.to_string(), &LINES_PER_WRITER.to_string()])
                .args([&RATE_PER_WRITER.to_string(), &ROTATE_EVERY.to_string()])
                .spawn()
                .unwrap()
        })
        .collect();

    // Runs of the agent: each ends with SIGKILL or SIGTERM; record where each run's output ends.
    let mut stops: Vec<(bool, HashMap<PathBuf, u64>)> = Vec::new(); // (killed, output sizes after)
    // Per stop: output sizes one checkpoint period (and some slack) before it.
    let mut window_starts: Vec<HashMap<PathBuf, u64>> = Vec::new();
    let window = Duration::from_millis(CHECKPOINT_INTERVAL_MS + 300);
    for k in 0..STOPS {
        let mut agent = start_agent(dir);
        let run_start = Instant::now();
        let stop_at = run_start + Duration::from_millis(150 + rng.next() % 550);
        let mut samples: Vec<(Instant, HashMap<PathBuf, u64>)> =
            vec![(run_start, stops.last().map(|s| s.1.clone()).unwrap_or_default())];
        while Instant::now() < stop_at {
            std::thread::sleep(Duration::from_millis(25));
            samples.push((Instant::now(), sizes(dir)));
        }
        let since = Instant::now().checked_sub(window).unwrap_or(run_start);
        let start_sizes = samples.iter().rev().find(|(t, _)| *t <= since).unwrap_or(&samples[0]).1.clone();
        window_starts.push(start_sizes);
        let kill = k % 2 == 0;
        if kill {
            signal(&agent, rustix::process::Signal::KILL);
            // Only a guard against a hang: a process killed inside fsync (the checkpoint) exits
            // when the fsync returns, which on a loaded disk took over 5 s.
            wait_exit(&mut agent, Duration::from_secs(60));
        } else {
            signal(&agent, rustix::process::Signal::TERM);
            let status = wait_exit(&mut agent, Duration::from_secs(25));
            assert!(status.success(), "graceful stop exits 0, got {status}");
        }
        stops.push((kill, sizes(dir)));
    }
    for w in &mut writers {
        assert!(w.wait().unwrap().success(), "writer failed");
    }
    // A last run until everything is out, then a graceful stop.
    let total = WRITERS as u64 * LINES_PER_WRITER;
    let mut agent = start_agent(dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines: usize = output_files(dir).iter().map(|p| parse_lines(&fs::read(p).unwrap()).len()).sum();
        let distinct = {
            let mut seen = std::collections::HashSet::new();
            for p in output_files(dir) {
                seen.extend(parse_lines(&fs::read(p).unwrap()));
            }
            seen.len() as u64
        };
        if distinct >= total {
            break;
        }
        assert!(Instant::now() < deadline, "only {distinct} of {total} lines arrived ({lines} with repeats)");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500));
    signal(&agent, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut agent, Duration::from_secs(25)).success());

    // Account for every line, run by run. A repeat belongs to the run that last delivered the
    // line: what a SIGKILLed run left uncommitted comes out again in the next run that reads
    // that file, which can come after graceful runs that never got to it (stopped within a turn
    // or two, while other targets filled the output's queue).
    let mut last: HashMap<(usize, u64), usize> = HashMap::new(); // line → last run that wrote it
    let mut from: HashMap<PathBuf, u64> = HashMap::new();
    let mut run_ends: Vec<HashMap<PathBuf, u64>> = stops.iter().map(|(_, s)| s.clone()).collect();
    run_ends.push(sizes(dir));
    let mut repeats_of = vec![0usize; stops.len()]; // per run: its lines delivered again later
    let mut dups_within_run = 0;
    let mut shown = 0;
    for (run, ends) in run_ends.iter().enumerate() {
        for p in output_files(dir) {
            let start = from.get(&p).copied().unwrap_or(0);
            let end = ends.get(&p).copied().unwrap_or(start);
            let bytes = fs::read(&p).unwrap();
            for line in parse_lines(&bytes[start as usize..end as usize]) {
                match last.insert(line, run) {
                    None => {}
                    Some(r) if r == run => dups_within_run += 1,
                    Some(r) => {
                        repeats_of[r] += 1;
                        if !stops[r].0 && shown < 6 {
                            shown += 1;
                            eprintln!(
                                "repeated though run {r} stopped gracefully: writer {} line {} again in run {run} ({})",
                                line.0,
                                line.1,
                                p.display()
                            );
                        }
                    }
                }
            }
            from.insert(p, end);
        }
    }
    let mut dups_after_kill = Vec::new();
    let mut kill_bounds = Vec::new();
    let mut dups_after_term = Vec::new();
    for (run, (killed, end_sizes)) in stops.iter().enumerate() {
        if !killed {
            dups_after_term.push(repeats_of[run]);
            continue;
        }
        dups_after_kill.push(repeats_of[run]);
        // Lines the killed run wrote in its last checkpoint period: what it may repeat.
        let mut bound = 0;
        for p in output_files(dir) {
            let a = window_starts[run].get(&p).copied().unwrap_or(0) as usize;
            let b = end_sizes.get(&p).copied().unwrap_or(0) as usize;
            if b > a {
                bound += parse_lines(&fs::read(&p).unwrap()[a..b]).len();
            }
        }
        kill_bounds.push(bound);
    }
    let missing: Vec<(usize, u64)> = (0..WRITERS)
        .flat_map(|w| (0..LINES_PER_WRITER).map(move |n| (w, n)))
        .filter(|l| !last.contains_key(l))
        .take(10)
        .collect();
    let kills = stops.iter().filter(|s| s.0).count();
    eprintln!(
        "{} lines, {kills} SIGKILLs, {} SIGTERMs; repeats of SIGKILLed runs: {:?} (total {}); of SIGTERMed runs: {:?}; within a run: {dups_within_run}",
        total,
        stops.len() - kills,
        dups_after_kill,
        dups_after_kill.iter().sum::<usize>(),
        dups_after_term
    );
    assert!(kills >= 20 && stops.len() - kills >= 20);
    assert!(missing.is_empty(), "lines lost, e.g. {missing:?}");
    assert_eq!(dups_within_run, 0, "one run never writes a line twice");
    assert!(
        dups_after_term.iter().all(|d| *d == 0),
        "nothing a gracefully stopped run delivered comes out again: {dups_after_term:?}"
    );
    // What a crash can repeat: at most what it delivered in its last checkpoint period.
    eprintln!("bounds (lines delivered in the checkpoint period before each SIGKILL): {kill_bounds:?}");
    for (d, b) in dups_after_kill.iter().zip(&kill_bounds) {
        assert!(
            d <= b,
            "repeats after a SIGKILL ({d}) above what it delivered in one checkpoint period ({b})"
        );
    }
}
