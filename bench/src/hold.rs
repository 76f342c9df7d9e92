//! hold: N idle subscribers, server RSS before and after → bytes per subscriber.
//! Over several processes (this binary re-executed as `hold-child`) when one
//! process may not open that many files.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fanout::{fig, mb};
use crate::procfs::{self, MachineCpu};
use crate::subs::{Mode, Pool};
use crate::Env;

/// Sizes of a hold run.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) subscribers: usize,
    pub(crate) channels: usize,
    pub(crate) procs: usize,
    pub(crate) hold_seconds: f64,
    pub(crate) settle_max: f64,
}

fn channel_names(env: &Env, channels: usize) -> Vec<String> {
    (0..channels.max(1))
        .map(|c| format!("{}-hold-{c}", env.prefix))
        .collect()
}

/// Waits until the server's RSS stops moving (1 s within 1 %), at most `max`.
async fn settle(env: &Env, max: Duration) -> Option<u64> {
    if !env.server.known() {
        return None;
    }
    let start = Instant::now();
    let mut samples: Vec<u64> = Vec::new();
    loop {
        let rss = env.server.rss()?;
        samples.push(rss);
        if samples.len() >= 5 {
            let last = &samples[samples.len() - 5..];
            let (lo, hi) = (*last.iter().min().unwrap_or(&0), *last.iter().max().unwrap_or(&0));
            if hi - lo <= hi / 100 {
                return Some(rss);
            }
        }
        if start.elapsed() >= max {
            return Some(rss);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs hold in this process, or over `spec.procs` child processes.
pub(crate) fn run(env: &Env, rt: &tokio::runtime::Runtime, spec: &Spec) -> (serde_json::Value, bool) {
    let (soft, hard) = procfs::nofile_limits();
    let mut procs = spec.procs.max(1);
    let per_proc_max = soft.saturating_sub(64) as usize;
    if spec.subscribers.div_ceil(procs) > per_proc_max {
        let need = spec.subscribers.div_ceil(per_proc_max.max(1));
        println!(
            "  note: open-file limit is {soft} (hard {hard}); splitting over {need} processes instead of {procs}{}",
            if soft < hard {
                format!(" (raise it with `ulimit -n {hard}` to need fewer)")
            } else {
                String::new()
            }
        );
        procs = need;
    }
    println!(
        "hold [{}] {}: {} idle subscribers over {} channel(s) in {procs} process(es)",
        env.server_name,
        env.label,
        spec.subscribers,
        spec.channels.max(1)
    );
    let rss0 = env.server.rss();
    let machine0 = MachineCpu::now();
    let start = Instant::now();

    enum Holder {
        Local(Pool),
        Children(Vec<Child>),
    }
    let (opened, failed, errors, holder) = if procs == 1 {
        let channels = channel_names(env, spec.channels);
        let (pool, opened, failed) = rt.block_on(async {
            let pool = Pool::spawn(env, spec.subscribers, &channels, Mode::Idle);
            let (o, f) = pool.wait_open(env.open_timeout, false).await;
            (pool, o, f)
        });
        let (errors, _) = pool.shared.errors();
        (opened, failed, errors, Holder::Local(pool))
    } else {
        match spawn_children(env, spec, procs) {
            Ok((children, opened, failed, errors)) => (opened, failed, errors, Holder::Children(children)),
            Err(e) => {
                println!("  ERROR: {e}");
                return (json!({"scenario": "hold", "ok": false, "error": e}), false);
            }
        }
    };
    let open_s = start.elapsed().as_secs_f64();
    println!("  {opened}/{} open, {failed} failed in {open_s:.2} s", spec.subscribers);
    // The runtime keeps driving the streams while we wait.
    let rss1 = rt.block_on(settle(env, Duration::from_secs_f64(spec.settle_max)));
    let settle_s = start.elapsed().as_secs_f64() - open_s;
    rt.block_on(async { tokio::time::sleep(Duration::from_secs_f64(spec.hold_seconds)).await });
    let rss2 = env.server.rss();
    let (steal_s, steal_pct) = machine0.steal_since(&MachineCpu::now());

    // Streams that ended while being held count as failures.
    let ended = match holder {
        Holder::Local(pool) => {
            let ended = pool.shared.ended.load(Relaxed);
            rt.block_on(pool.close());
            ended
        }
        Holder::Children(children) => close_children(children),
    };

    let per_sub = match (rss0, rss1) {
        (Some(a), Some(b)) if opened > 0 => Some((b as f64 - a as f64) / opened as f64),
        _ => None,
    };
    let ok = failed == 0 && ended == 0 && opened == spec.subscribers;
    println!(
        "  server RSS before {} MB, after {} MB (settled in {settle_s:.1} s), after holding {} s {} MB",
        mb(rss0),
        mb(rss1),
        spec.hold_seconds,
        mb(rss2)
    );
    match per_sub {
        Some(b) => println!("  → {:.0} bytes ({:.2} KB) per idle subscriber", b, b / 1024.0),
        None => println!("  server RSS unknown (give --server-pid)"),
    }
    println!("  steal {steal_s:.2} s ({steal_pct:.2} %); streams ended while held: {ended}");
    if !errors.is_empty() {
        println!("  errors: {errors:?}");
    }
    println!("  {}", if ok { "OK" } else { "FAILED" });
    let figures = vec![
        json!({"name": "RSS per idle subscriber KB", "value": per_sub.map(|b| b / 1024.0), "agg": "median"}),
        json!({"name": "server RSS with subscribers MB", "value": rss1.map(|b| b as f64 / 1048576.0), "agg": "median"}),
        fig("connect all s", open_s, "median"),
        fig("steal %", steal_pct, "max"),
    ];
    (
        json!({
            "scenario": "hold",
            "ok": ok,
            "subscribers": spec.subscribers,
            "channels": spec.channels.max(1),
            "procs": procs,
            "opened": opened,
            "failed": failed,
            "ended": ended,
            "open_s": open_s,
            "settle_s": settle_s,
            "rss_before": rss0,
            "rss_after": rss1,
            "rss_after_hold": rss2,
            "bytes_per_subscriber": per_sub,
            "steal_s": steal_s,
            "steal_pct": steal_pct,
            "errors": errors,
            "figures": figures,
        }),
        ok,
    )
}

/// Starts the children, waits until each reports its subscribers open.
#[allow(clippy::type_complexity)]
fn spawn_children(env: &Env, spec: &Spec, procs: usize) -> Result<(Vec<Child>, usize, usize, Vec<String>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut children = Vec::new();
    let mut offset = env.address_offset;
    let mut first = 0usize;
    for j in 0..procs {
        let n = spec.subscribers / procs + usize::from(j < spec.subscribers % procs);
        let mut cmd = Command::new(&exe);
        cmd.arg("hold-child")
            .arg("--sub-url")
            .arg(&env.sub_url)
            .args(env.sub_header_args())
            .arg("--channel-prefix")
            .arg(&env.prefix)
            .arg("--subscribers")
            .arg(n.to_string())
            .arg("--first-index")
            .arg(first.to_string())
            .arg("--channels")
            .arg(spec.channels.max(1).to_string())
            .arg("--address-offset")
            .arg(offset.to_string())
            .arg("--per-address")
            .arg(env.per_address.to_string())
            .arg("--connect-concurrency")
            .arg(env.connect_concurrency.to_string())
            .arg("--connect-timeout")
            .arg(env.connect_timeout.as_secs_f64().to_string())
            .arg("--open-timeout")
            .arg(env.open_timeout.as_secs_f64().to_string())
            .arg("--deadline")
            .arg((env.open_timeout.as_secs_f64() + spec.settle_max + spec.hold_seconds + 60.0).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| format!("spawn {exe:?}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((j, line)).is_err() {
                    break;
                }
            }
        });
        children.push(child);
        if env.per_address > 0 {
            offset += n.div_ceil(env.per_address as usize) as u32;
        }
        first += n;
    }
    drop(tx);
    let deadline = Instant::now() + env.open_timeout + Duration::from_secs(10);
    let mut reported = vec![false; procs];
    let (mut opened, mut failed) = (0, 0);
    let mut errors = Vec::new();
    while reported.iter().any(|r| !r) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((j, line)) => {
                if let Some(rest) = line.strip_prefix("OPENED ") {
                    let v: Vec<usize> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                    opened += v.first().copied().unwrap_or(0);
                    failed += v.get(1).copied().unwrap_or(0);
                    reported[j] = true;
                } else if let Some(e) = line.strip_prefix("ERROR ") {
                    if errors.len() < 8 {
                        errors.push(format!("process {j}: {e}"));
                    }
                }
            }
            Err(_) => {
                for mut c in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err("hold children did not report in time".into());
            }
        }
    }
    Ok((children, opened, failed, errors))
}

/// Tells the children to close their streams; returns how many streams had ended early.
fn close_children(children: Vec<Child>) -> usize {
    let mut ended = 0;
    for mut c in children {
        if let Some(mut stdin) = c.stdin.take() {
            let _ = stdin.write_all(b"close\n");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match c.try_wait() {
                Ok(Some(status)) => {
                    // The child's exit code is the number of streams that ended early (capped).
                    ended += status.code().unwrap_or(0).max(0) as usize;
                    break;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
    ended
}

/// The child side: open `n` subscribers, report, hold until told (or stdin closes).
pub(crate) fn child(env: &Env, rt: &tokio::runtime::Runtime, n: usize, first: usize, channels: usize) -> i32 {
    let names = channel_names(env, channels);
    // Channel of subscriber i is i % channels over the whole run: rotate so that
    // children together spread evenly.
    let mut rotated = names.clone();
    rotated.rotate_left(first % names.len());
    let (pool, opened, failed) = rt.block_on(async {
        let pool = Pool::spawn(env, n, &rotated, Mode::Idle);
        let (o, f) = pool.wait_open(env.open_timeout, true).await;
        (pool, o, f)
    });
    let (errors, _) = pool.shared.errors();
    let mut out = std::io::stdout().lock();
    for e in errors.iter().take(3) {
        let _ = writeln!(out, "ERROR {}", e.replace('\n', " "));
    }
    let _ = writeln!(out, "OPENED {opened} {failed}");
    let _ = out.flush();
    drop(out);
    // Hold until the parent says so (a line or EOF on stdin), driving the streams meanwhile.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = rt.block_on(rx);
    let ended = pool.shared.ended.load(Relaxed);
    rt.block_on(pool.close());
    ended.min(100) as i32
}
