//! fanout and publish: subscribers on C channels, publishers at a fixed total
//! rate or as fast as the server answers, every delivery checked and timed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::conn::PubConn;
use crate::hist::Histogram;
use crate::procfs::{self, MachineCpu};
use crate::sse::{write_payload, Payload};
use crate::subs::{now_ns, Mode, Pool, Shared, MAX_K};
use crate::Env;

/// Sizes of one fanout or publish run.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) subscribers: usize,
    pub(crate) channels: usize,
    /// Messages per second over all channels; 0 = as fast as the server answers.
    pub(crate) rate: f64,
    pub(crate) seconds: f64,
    pub(crate) connections: usize,
    pub(crate) payload_bytes: usize,
    /// At saturation, a publisher waits while its channel's subscribers are on
    /// average more than this many messages behind (0 = never waits).
    pub(crate) max_lag: u64,
    pub(crate) drain_timeout: f64,
    pub(crate) settle_ms: u64,
    /// Extra subscribers that read nothing for `slow_pause` seconds once open.
    pub(crate) slow: usize,
    pub(crate) slow_pause: f64,
}

/// Publisher-side counters.
struct PubShared {
    /// Messages accepted (2xx) per channel.
    published: Vec<AtomicU64>,
    /// Subscribers per channel (open ones).
    subs: Vec<u64>,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Time spent waiting for subscribers to catch up (max-lag), ns.
    lag_wait_ns: AtomicU64,
    post_hist: Histogram,
    /// At a fixed rate: how long the server's answer to the previous POST held
    /// each POST back past its due time, ns (0 when it did not).
    held_hist: Histogram,
}

/// Runs the scenario and returns (result JSON, whether it is correct).
pub(crate) async fn run(env: &Env, scenario: &str, spec: &Spec) -> (serde_json::Value, bool) {
    let channels: Vec<String> = (0..spec.channels.max(1))
        .map(|c| format!("{}-{c}", env.prefix))
        .collect();
    let nchan = channels.len();
    let k = spec.connections.clamp(1, MAX_K);
    println!(
        "{scenario} [{}] {}: {} subscribers over {} channel(s), {}, {} publisher connection(s), {} s, payload pad {} B",
        env.server_name,
        env.label,
        spec.subscribers,
        nchan,
        if spec.rate > 0.0 {
            format!("{} msg/s total", spec.rate)
        } else {
            "saturation".to_owned()
        },
        k,
        spec.seconds,
        spec.payload_bytes
    );

    // Warm-up: every subscriber open before the first message.
    let pool = Pool::spawn(env, spec.subscribers, &channels, Mode::Live);
    let t_open = Instant::now();
    let (opened, failed) = pool.wait_open(env.open_timeout, false).await;
    let open_s = t_open.elapsed().as_secs_f64();
    if opened < spec.subscribers {
        let (errors, n) = pool.shared.errors();
        pool.close().await;
        println!(
            "  ERROR: only {opened}/{} subscribers opened ({failed} failed) in {open_s:.1} s; {n} errors, first: {errors:?}",
            spec.subscribers
        );
        return (
            json!({"scenario": scenario, "ok": false, "error": "subscribers did not open",
                   "opened": opened, "failed": failed, "errors": errors}),
            false,
        );
    }
    println!("  {opened} subscribers open in {open_s:.2} s");
    let slow_pool = if spec.slow > 0 {
        let slow = Pool::spawn_with(
            env,
            spec.slow,
            &channels,
            Mode::Live,
            spec.subscribers,
            Some(Duration::from_secs_f64(spec.slow_pause)),
        );
        let (o, f) = slow.wait_open(env.open_timeout, false).await;
        if o < spec.slow {
            let (errors, _) = slow.shared.errors();
            slow.close().await;
            pool.close().await;
            println!(
                "  ERROR: only {o}/{} slow subscribers opened ({f} failed): {errors:?}",
                spec.slow
            );
            return (
                json!({"scenario": scenario, "ok": false, "error": "slow subscribers did not open", "errors": errors}),
                false,
            );
        }
        println!(
            "  + {o} slow subscribers (read nothing for {} s once open)",
            spec.slow_pause
        );
        Some(slow)
    } else {
        None
    };
    tokio::time::sleep(Duration::from_millis(spec.settle_ms)).await;

    let mut subs = vec![0u64; nchan];
    for &c in &pool.chan_of {
        subs[c] += 1;
    }
    let ps = Arc::new(PubShared {
        published: (0..nchan).map(|_| AtomicU64::new(0)).collect(),
        subs,
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        lag_wait_ns: AtomicU64::new(0),
        post_hist: Histogram::new(),
        held_hist: Histogram::new(),
    });

    let paths: Arc<Vec<Vec<u8>>> = Arc::new(channels.iter().map(|c| env.publ.render(c).into_bytes()).collect());
    let cpu0 = env.server.cpu();
    let machine0 = MachineCpu::now();
    let self0 = procfs::self_cpu_ticks();
    let rss0 = env.server.rss();
    // Peak server RSS while publishing and draining.
    let rss_peak = Arc::new(AtomicU64::new(rss0.unwrap_or(0)));
    let sampler = {
        let server = env.server.clone();
        let peak = rss_peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(rss) = server.rss() {
                    peak.fetch_max(rss, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let start = Instant::now();
    let start_ns = now_ns();
    let end = start + Duration::from_secs_f64(spec.seconds);
    let mut pubs = Vec::new();
    for conn in 0..k {
        pubs.push(tokio::spawn(publisher(
            conn,
            k,
            env.clone_pub(),
            spec.clone(),
            paths.clone(),
            pool.shared.clone(),
            ps.clone(),
            (start, start_ns),
            end,
        )));
    }
    let mut pub_errors = Vec::new();
    for p in pubs {
        match p.await {
            Ok(Some(e)) => pub_errors.push(e),
            Ok(None) => {}
            Err(e) => pub_errors.push(format!("publisher task: {e}")),
        }
    }
    let publish_s = start.elapsed().as_secs_f64();

    // Drain: wait for every expected delivery (or the drain timeout).
    let expected: u64 = ps
        .published
        .iter()
        .zip(&ps.subs)
        .map(|(p, &s)| p.load(Relaxed) * s)
        .sum();
    let drain_start = Instant::now();
    let drain_limit = Duration::from_secs_f64(spec.drain_timeout);
    while pool.shared.delivered.load(Relaxed) < expected && drain_start.elapsed() < drain_limit {
        if pool.shared.ended.load(Relaxed) > 0 && drain_start.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drained = pool.shared.delivered.load(Relaxed) >= expected;
    let drain_s = drain_start.elapsed().as_secs_f64();
    let window_s = start.elapsed().as_secs_f64();
    let cpu1 = env.server.cpu();
    let machine1 = MachineCpu::now();
    let self1 = procfs::self_cpu_ticks();
    let rss1 = env.server.rss();

    // Slow subscribers: wait until each has every message, or no progress for 2 s.
    let slow_report = match &slow_pool {
        None => None,
        Some(slow) => {
            let want = |i: usize| ps.published[slow.chan_of[i]].load(Relaxed);
            let limit = Instant::now() + Duration::from_secs_f64(spec.drain_timeout + spec.slow_pause);
            let mut last_total = u64::MAX;
            let mut last_change = Instant::now();
            loop {
                let mut all = true;
                let mut total = 0;
                for (i, st) in slow.stats.iter().enumerate() {
                    let got = st.unique.load(Relaxed);
                    total += got;
                    all &= got >= want(i);
                }
                if total != last_total {
                    last_total = total;
                    last_change = Instant::now();
                }
                if all
                    || Instant::now() >= limit
                    || (start.elapsed().as_secs_f64() > spec.seconds.max(spec.slow_pause) + 1.0
                        && last_change.elapsed() > Duration::from_secs(2))
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (mut lost, mut dup, mut gaps, mut unexplained, mut got_all) = (0, 0, 0, 0, 0);
            for (i, st) in slow.stats.iter().enumerate() {
                let got = st.unique.load(Relaxed);
                let g = st.gaps.load(Relaxed);
                lost += want(i).saturating_sub(got);
                dup += st.dup.load(Relaxed);
                gaps += g;
                if got >= want(i) {
                    got_all += 1;
                } else if g == 0 {
                    unexplained += 1;
                }
            }
            let ended = slow.shared.ended.load(Relaxed);
            let (errors, _) = slow.shared.errors();
            println!(
                "  slow subscribers: {got_all}/{} caught up completely, {gaps} gap frames, {lost} messages missed ({unexplained} subscribers missed some without a gap frame), {dup} duplicated, {ended} streams ended; first notes {errors:?}",
                spec.slow
            );
            Some(
                json!({"subscribers": spec.slow, "pause_s": spec.slow_pause, "caught_up": got_all,
                        "gap_frames": gaps, "missed": lost, "missed_without_gap": unexplained,
                        "dup": dup, "streams_ended": ended, "ok": dup == 0 && unexplained == 0}),
            )
        }
    };
    sampler.abort();
    let rss_peak = if env.server.known() {
        Some(rss_peak.load(Relaxed))
    } else {
        None
    };

    let shared_arc = pool.shared.clone();
    let shared: &Shared = &shared_arc;
    let delivered = shared.delivered.load(Relaxed);
    let mut lost: u64 = 0;
    let mut extra: u64 = 0;
    let mut dup: u64 = 0;
    let mut skips: u64 = 0;
    for (i, st) in pool.stats.iter().enumerate() {
        let want = ps.published[pool.chan_of[i]].load(Relaxed);
        let got = st.unique.load(Relaxed);
        lost += want.saturating_sub(got);
        extra += got.saturating_sub(want);
        dup += st.dup.load(Relaxed);
        skips += st.skips.load(Relaxed);
    }
    let ended = shared.ended.load(Relaxed);
    let (errors, error_count) = shared.errors();
    let ok_posts = ps.ok.load(Relaxed);
    let post_errors = ps.errors.load(Relaxed);
    let last_ns = shared.last_delivery_ns.load(Relaxed);
    let delivery_s = if last_ns > start_ns {
        (last_ns - start_ns) as f64 / 1e9
    } else {
        window_s
    };
    let server_cpu_s = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / procfs::CLK_TCK),
        _ => None,
    };
    let per_cpu = |count: u64| -> Option<f64> { server_cpu_s.filter(|&s| s > 0.0).map(|s| (count as f64 / s).round()) };
    let bench_cpu_s = match (self0, self1) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / procfs::CLK_TCK,
        _ => 0.0,
    };
    let (steal_s, steal_pct) = machine0.steal_since(&machine1);
    // CPU time of everything else on the machine in the window (noise).
    let others_cpu_s = (machine0.busy_since(&machine1) - server_cpu_s.unwrap_or(0.0) - bench_cpu_s).max(0.0);
    // On average more than 15 % of a CPU taken by other processes: the figures are suspect.
    let noisy = others_cpu_s > 0.15 * window_s || steal_pct > 2.0;
    let lat = shared.hist.summary_ms();
    // Arrival latency only from kernel timestamps; none at all → no figures.
    let stamped = shared.arrival_hist.count();
    let unstamped = shared.unstamped.load(Relaxed);
    let stamp_refused = shared.stamp_refused.load(Relaxed);
    let arrival_lat = (stamped > 0).then(|| shared.arrival_hist.summary_ms());
    let post_lat = ps.post_hist.summary_ms();
    let held = (spec.rate > 0.0).then(|| ps.held_hist.summary_ms());
    let deliveries_per_s = delivered as f64 / delivery_s.max(1e-9);
    let posts_per_s = ok_posts as f64 / publish_s.max(1e-9);
    let lag_wait_s = ps.lag_wait_ns.load(Relaxed) as f64 / 1e9;
    let correct = lost == 0
        && dup == 0
        && extra == 0
        && post_errors == 0
        && ended == 0
        && shared.bad.load(Relaxed) == 0
        && shared.gaps.load(Relaxed) == 0
        && shared.failures.load(Relaxed) == 0
        && pub_errors.is_empty()
        && slow_report.as_ref().is_none_or(|r| r["ok"].as_bool() == Some(true));

    println!(
        "  published {ok_posts} messages in {publish_s:.2} s ({posts_per_s:.0} POST/s, {post_errors} errors; POST latency p50 {:.3} ms p99 {:.3} ms){}",
        post_lat.p50,
        post_lat.p99,
        if lag_wait_s > 0.0 { format!(", waited {lag_wait_s:.2} s for slow subscribers") } else { String::new() }
    );
    if let Some(lag) = &held {
        println!(
            "  POSTs held past their due time by the server's previous answer: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (counted in their latency)",
            lag.p50, lag.p99, lag.max
        );
    }
    println!(
        "  delivered {delivered}/{expected} ({}; drain {drain_s:.2} s): {deliveries_per_s:.0} deliveries/s",
        if drained { "complete" } else { "INCOMPLETE" }
    );
    println!(
        "  read latency ms:    p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}  (publish → parsed by the load generator)",
        lat.p50, lat.p90, lat.p99, lat.max, lat.mean
    );
    match arrival_lat {
        Some(a) => println!(
            "  arrival latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}  (publish → kernel receive timestamp; {stamped} of {delivered} deliveries stamped)",
            a.p50, a.p90, a.p99, a.max, a.mean
        ),
        None if delivered == 0 => {}
        None => println!(
            "  arrival latency: no kernel receive timestamp came with any delivery (SO_TIMESTAMPNS refused on {stamp_refused} of {} streams); arrival figures left out",
            spec.subscribers
        ),
    }
    match server_cpu_s {
        Some(cpu) => println!(
            "  server CPU {cpu:.2} s over {window_s:.2} s → {} deliveries per server CPU-s, {} POSTs per server CPU-s; server RSS {} → {} MB (peak {} MB)",
            per_cpu(delivered).map_or("-".into(), |v| format!("{v:.0}")),
            per_cpu(ok_posts).map_or("-".into(), |v| format!("{v:.0}")),
            mb(rss0),
            mb(rss1),
            mb(rss_peak)
        ),
        None => println!("  server CPU unknown (give --server-pid)"),
    }
    println!(
        "  load generator CPU {bench_cpu_s:.2} s; other processes {others_cpu_s:.2} s{}; steal {steal_s:.2} s ({steal_pct:.2} % of all CPU time)",
        if noisy { " (noisy)" } else { "" }
    );
    println!(
        "  lost {lost}, duplicated {dup}, extra {extra}, sequence skips {skips}, streams ended {ended}, gap frames {}, failure frames {}, timeout frames {}, bad frames {}",
        shared.gaps.load(Relaxed),
        shared.failures.load(Relaxed),
        shared.timeouts.load(Relaxed),
        shared.bad.load(Relaxed)
    );
    if error_count > 0 || !pub_errors.is_empty() {
        println!("  errors ({error_count} subscriber): {errors:?} publisher: {pub_errors:?}");
    }
    println!(
        "  {}",
        if correct {
            "OK"
        } else {
            "FAILED: messages lost, duplicated or errors"
        }
    );
    pool.close().await;
    if let Some(slow) = slow_pool {
        slow.close().await;
    }

    let mut figures = Vec::new();
    if scenario == "publish" {
        figures.push(fig("POST/s", posts_per_s.round(), "median"));
        figures.push(fig_opt("POSTs per server CPU-s", per_cpu(ok_posts), "median"));
        figures.push(fig("POST latency p99 ms", post_lat.p99, "median"));
        if spec.subscribers > 0 {
            figures.push(fig(
                "deliveries per server CPU-s",
                per_cpu(delivered).unwrap_or(0.0),
                "median",
            ));
        }
    } else {
        figures.push(fig_opt("deliveries per server CPU-s", per_cpu(delivered), "median"));
        figures.push(fig("deliveries/s", deliveries_per_s.round(), "median"));
        figures.push(fig("read latency p50 ms", lat.p50, "median"));
        figures.push(fig("read latency p90 ms", lat.p90, "median"));
        figures.push(fig("read latency p99 ms", lat.p99, "median"));
        figures.push(fig("read latency max ms", lat.max, "median"));
        figures.push(fig_opt("arrival latency p50 ms", arrival_lat.map(|a| a.p50), "median"));
        figures.push(fig_opt("arrival latency p90 ms", arrival_lat.map(|a| a.p90), "median"));
        figures.push(fig_opt("arrival latency p99 ms", arrival_lat.map(|a| a.p99), "median"));
        figures.push(fig_opt("arrival latency max ms", arrival_lat.map(|a| a.max), "median"));
        if spec.rate == 0.0 {
            figures.push(fig("POST/s", posts_per_s.round(), "median"));
        } else {
            figures.push(fig("messages/s achieved", posts_per_s, "median"));
            figures.push(fig("POST latency p99 ms", post_lat.p99, "median"));
            figures.push(fig_opt("POST held past due p99 ms", held.map(|l| l.p99), "median"));
        }
    }
    figures.push(fig_opt("server CPU s", server_cpu_s, "median"));
    figures.push(fig("lost + duplicated (all runs)", (lost + dup + extra) as f64, "sum"));
    figures.push(fig("steal %", steal_pct, "max"));
    figures.push(fig("other processes' CPU s", others_cpu_s, "max"));

    let result = json!({
        "scenario": scenario,
        "ok": correct,
        "subscribers": spec.subscribers,
        "channels": nchan,
        "rate": spec.rate,
        "seconds": spec.seconds,
        "connections": k,
        "payload_bytes": spec.payload_bytes,
        "open_s": open_s,
        "published": ok_posts,
        "post_errors": post_errors,
        "posts_per_s": posts_per_s,
        "post_latency_ms": post_lat,
        "held_past_due_ms": held,
        "expected": expected,
        "delivered": delivered,
        "drained": drained,
        "drain_s": drain_s,
        "deliveries_per_s": deliveries_per_s,
        "latency_ms": lat,
        "arrival_latency_ms": arrival_lat,
        "arrival_stamped": stamped,
        "arrival_unstamped": unstamped,
        "arrival_stamp_refused": stamp_refused,
        "lost": lost,
        "dup": dup,
        "extra": extra,
        "skips": skips,
        "streams_ended": ended,
        "gap_frames": shared.gaps.load(Relaxed),
        "failure_frames": shared.failures.load(Relaxed),
        "timeout_frames": shared.timeouts.load(Relaxed),
        "bad_frames": shared.bad.load(Relaxed),
        "lag_wait_s": lag_wait_s,
        "window_s": window_s,
        "server_cpu_s": server_cpu_s,
        "deliveries_per_cpu_s": per_cpu(delivered),
        "posts_per_cpu_s": per_cpu(ok_posts),
        "server_rss_before": rss0,
        "server_rss_after": rss1,
        "server_rss_peak": rss_peak,
        "slow": slow_report,
        "bench_cpu_s": bench_cpu_s,
        "others_cpu_s": others_cpu_s,
        "noisy": noisy,
        "steal_s": steal_s,
        "steal_pct": steal_pct,
        "errors": errors,
        "publisher_errors": pub_errors,
        "figures": figures,
    });
    (result, correct)
}

pub(crate) fn fig(name: &str, value: f64, agg: &str) -> serde_json::Value {
    json!({"name": name, "value": value, "agg": agg})
}

pub(crate) fn fig_opt(name: &str, value: Option<f64>, agg: &str) -> serde_json::Value {
    json!({"name": name, "value": value, "agg": agg})
}

pub(crate) fn mb(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0))
}

/// What a publisher needs from the environment.
#[derive(Clone)]
pub(crate) struct PubEnv {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) host: String,
    pub(crate) body_prefix: Vec<u8>,
    pub(crate) body_suffix: Vec<u8>,
    /// Extra request header lines.
    pub(crate) headers: Vec<u8>,
    pub(crate) timeout: Duration,
}

impl PubEnv {
    /// Appends a complete POST of `payload` to `out`.
    pub(crate) fn request(&self, out: &mut Vec<u8>, body: &mut Vec<u8>, path: &[u8], p: &Payload, pad: usize) {
        body.clear();
        body.extend_from_slice(&self.body_prefix);
        write_payload(body, p, pad);
        body.extend_from_slice(&self.body_suffix);
        out.clear();
        crate::http::post_request(out, &self.host, &self.headers, path, body);
    }
}

/// Publisher connection `conn` of `k`: sends message numbers conn, conn + k, …
/// (message `i` goes to channel `i % C`, at `start + i / rate`). Returns its first error.
#[allow(clippy::too_many_arguments)]
async fn publisher(
    conn: usize,
    k: usize,
    env: PubEnv,
    spec: Spec,
    paths: Arc<Vec<Vec<u8>>>,
    subs: Arc<Shared>,
    ps: Arc<PubShared>,
    (start, start_ns): (Instant, u64),
    end: Instant,
) -> Option<String> {
    let nchan = paths.len();
    let mut http = PubConn::new(env.addr, env.timeout);
    let mut seq = vec![0u64; nchan];
    let mut req = Vec::with_capacity(1024 + spec.payload_bytes);
    let mut body = Vec::with_capacity(512 + spec.payload_bytes);
    let mut first_error = None;
    let mut i = conn as u64;
    // When the previous POST on this connection was sent (ns since the epoch).
    let mut prev_sent_ns = 0;
    'send: loop {
        let now = Instant::now();
        // At a fixed rate, the server may hold a message back past its due
        // time by answering the previous POST late (a server that answers
        // only after its fan-out does): by how long its answer (kernel receive
        // timestamp) came after both this message's due time and the previous
        // send. That wait is the server's, so the message's latency counts
        // from that much before its send, or the wait would stay here, out of
        // the measurement (coordinated omission). The load generator's own
        // delays (timer slack, a busy thread) are not charged to the server.
        let mut held = 0;
        if spec.rate > 0.0 {
            let offset = Duration::from_secs_f64(i as f64 / spec.rate);
            let due = start + offset;
            if due >= end {
                break;
            }
            let due_ns = start_ns + offset.as_nanos() as u64;
            if let Some(answered) = http.answered_ns() {
                held = answered.saturating_sub(due_ns.max(prev_sent_ns));
            }
            ps.held_hist.record(held);
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            }
        } else if now >= end {
            break;
        }
        let c = (i % nchan as u64) as usize;
        let n = ps.subs[c];
        if spec.max_lag > 0 && n > 0 {
            let wait_start = Instant::now();
            let mut waited = false;
            while ps.published[c].load(Relaxed) * n > subs.chan_delivered[c].load(Relaxed) + spec.max_lag * n {
                waited = true;
                if Instant::now() >= end {
                    break 'send;
                }
                tokio::task::yield_now().await;
            }
            if waited {
                ps.lag_wait_ns
                    .fetch_add(wait_start.elapsed().as_nanos() as u64, Relaxed);
            }
        }
        let p = Payload {
            c: c as u64,
            k: conn as u64,
            s: seq[c],
            t: now_ns() - held,
        };
        prev_sent_ns = p.t + held;
        env.request(&mut req, &mut body, &paths[c], &p, spec.payload_bytes);
        let sent = Instant::now();
        match http.request(&req).await {
            Ok(status) if (200..300).contains(&status) => {
                ps.post_hist.record(sent.elapsed().as_nanos() as u64);
                ps.published[c].fetch_add(1, Relaxed);
                ps.ok.fetch_add(1, Relaxed);
            }
            Ok(status) => {
                ps.errors.fetch_add(1, Relaxed);
                first_error.get_or_insert_with(|| format!("POST answered {status}"));
            }
            Err(e) => {
                ps.errors.fetch_add(1, Relaxed);
                first_error.get_or_insert(e);
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        seq[c] += 1;
        i += k as u64;
    }
    first_error
}
