//! resume: publish B messages to a fresh channel (a recording subscriber
//! notes each message's SSE id), then reconnect with the id of the message
//! that lies `back` messages before the newest and time the replay.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::conn::{Batch, PubConn, Read, SseConn};
use crate::fanout::{fig, PubEnv};
use crate::procfs::MachineCpu;
use crate::sse::{find_payload, Handler, Kind, Payload};
use crate::subs::now_ns;
use crate::target::encode_query;
use crate::Env;

/// Sizes of a resume run.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) backlog: u64,
    pub(crate) backs: Vec<u64>,
    pub(crate) repeat: usize,
    pub(crate) by: ResumeBy,
    pub(crate) payload_bytes: usize,
}

/// How the resume position is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ResumeBy {
    /// `Last-Event-ID` request header.
    Header,
    /// `lastEventId` query parameter added to the URL.
    Query,
    /// `{last_id}` in `--resume-url`.
    Template,
}

/// Notes the SSE id of every message.
struct Recorder {
    ids: Vec<Option<String>>,
    cur_id: Vec<u8>,
    pending: Option<u64>,
    seen: u64,
    problems: Vec<String>,
}

impl Handler for Recorder {
    fn id(&mut self, id: &[u8]) {
        self.cur_id.clear();
        self.cur_id.extend_from_slice(id);
    }
    fn data(&mut self, kind: Kind, data: &[u8]) {
        if kind != Kind::Message {
            self.problems
                .push(format!("recorder got {kind:?}: {}", String::from_utf8_lossy(data)));
            return;
        }
        match find_payload(data) {
            Some(p) => self.pending = Some(p.s),
            None => self.problems.push("recorder: message without payload".into()),
        }
    }
    fn end(&mut self, _kind: Kind) {
        if let Some(s) = self.pending.take() {
            if let Some(slot) = self.ids.get_mut(s as usize) {
                *slot = Some(String::from_utf8_lossy(&self.cur_id).into_owned());
                self.seen += 1;
            }
        }
    }
}
impl Batch for Recorder {}

/// Checks one replay.
struct Replay {
    next: u64,
    last: u64,
    count: u64,
    out_of_order: u64,
    specials: Vec<String>,
    first_at: Option<Instant>,
    done_at: Option<Instant>,
}

impl Handler for Replay {
    fn data(&mut self, kind: Kind, data: &[u8]) {
        if kind != Kind::Message {
            if self.specials.len() < 4 {
                self.specials
                    .push(format!("{kind:?}: {}", String::from_utf8_lossy(data)));
            }
            return;
        }
        let now = Instant::now();
        self.first_at.get_or_insert(now);
        let Some(p) = find_payload(data) else {
            self.out_of_order += 1;
            return;
        };
        if p.s != self.next {
            self.out_of_order += 1;
        }
        self.next = p.s + 1;
        self.count += 1;
        if p.s == self.last {
            self.done_at = Some(now);
        }
    }
}
impl Batch for Replay {}

/// Runs the scenario and returns (result JSON, whether it is correct).
pub(crate) async fn run(env: &Env, spec: &Spec) -> (serde_json::Value, bool) {
    let b = spec.backlog.max(1);
    let channel = format!("{}-resume", env.prefix);
    println!(
        "resume [{}] {}: {} messages in channel {channel}, replays of {:?} back, {} times each, resume by {:?}",
        env.server_name, env.label, b, spec.backs, spec.repeat, spec.by
    );
    let fail = |e: String| {
        println!("  ERROR: {e}");
        (json!({"scenario": "resume", "ok": false, "error": e}), false)
    };
    let machine0 = MachineCpu::now();

    // 1. A live subscriber records the id of messages 0..=B.
    let sub_req = crate::http::sse_request(&env.sub.host, &env.sub_headers, &env.sub.render(&channel), None);
    let mut rec_conn = match SseConn::open(env.sub.addr, None, &sub_req, env.connect_timeout).await {
        Ok(c) => c,
        Err(e) => return fail(format!("recording subscriber: {e}")),
    };
    let recorder = tokio::spawn(async move {
        let mut rec = Recorder {
            ids: vec![None; b as usize + 1],
            cur_id: Vec::new(),
            pending: None,
            seen: 0,
            problems: Vec::new(),
        };
        while rec.seen < b + 1 {
            match rec_conn.read(&mut rec).await {
                Ok(Read::More) => {}
                Ok(Read::End) => {
                    rec.problems.push("recording stream ended".into());
                    break;
                }
                Err(e) => {
                    rec.problems.push(e);
                    break;
                }
            }
        }
        rec
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // 2. Publish messages 0..=B (message 0 is the resume point of a full replay).
    let penv: PubEnv = env.clone_pub();
    let path = env.publ.render(&channel).into_bytes();
    let mut http = PubConn::new(penv.addr, penv.timeout);
    let (mut req, mut body) = (Vec::new(), Vec::new());
    let t_pub = Instant::now();
    for s in 0..=b {
        let p = Payload {
            c: 0,
            k: 0,
            s,
            t: now_ns(),
        };
        penv.request(&mut req, &mut body, &path, &p, spec.payload_bytes);
        match http.request(&req).await {
            Ok(st) if (200..300).contains(&st) => {}
            Ok(st) => {
                recorder.abort();
                return fail(format!("POST of message {s} answered {st}"));
            }
            Err(e) => {
                recorder.abort();
                return fail(format!("POST of message {s}: {e}"));
            }
        }
    }
    let publish_s = t_pub.elapsed().as_secs_f64();
    let rec = match tokio::time::timeout(Duration::from_secs(30), recorder).await {
        Ok(Ok(rec)) => rec,
        Ok(Err(e)) => return fail(format!("recorder task: {e}")),
        Err(_) => return fail("the recording subscriber did not get every message in 30 s".into()),
    };
    if rec.seen < b + 1 || !rec.problems.is_empty() {
        return fail(format!(
            "recording subscriber saw {}/{} messages: {:?}",
            rec.seen,
            b + 1,
            rec.problems
        ));
    }
    println!(
        "  published {} messages in {publish_s:.2} s; ids {} … {}",
        b + 1,
        rec.ids[0].as_deref().unwrap_or("?"),
        rec.ids[b as usize].as_deref().unwrap_or("?")
    );

    // 3. Replays (machine noise measured over them alone).
    let replay_m0 = MachineCpu::now();
    let replay_srv0 = env.server.cpu();
    let replay_self0 = crate::procfs::self_cpu_ticks();
    let replay_t0 = Instant::now();
    let mut all_ok = true;
    let mut replays = serde_json::Map::new();
    let mut figures = Vec::new();
    for &back in &spec.backs {
        let back = back.clamp(1, b);
        let from = (b - back) as usize;
        let last_id = rec.ids[from].clone().unwrap_or_default();
        let (path, header) = match spec.by {
            ResumeBy::Header => (env.resume.render(&channel), Some(last_id.as_str())),
            ResumeBy::Query => {
                let p = env.resume.render(&channel);
                let sep = if p.contains('?') { '&' } else { '?' };
                (format!("{p}{sep}lastEventId={}", encode_query(&last_id)), None)
            }
            ResumeBy::Template => (
                env.resume
                    .render(&channel)
                    .replace("{last_id}", &encode_query(&last_id)),
                None,
            ),
        };
        let request = crate::http::sse_request(&env.resume.host, &env.sub_headers, &path, header);
        let mut times = Vec::new();
        let mut firsts = Vec::new();
        let mut problems: Vec<String> = Vec::new();
        for _ in 0..spec.repeat.max(1) {
            let t0 = Instant::now();
            let mut conn = match SseConn::open(env.resume.addr, None, &request, env.connect_timeout).await {
                Ok(c) => c,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let mut r = Replay {
                next: from as u64 + 1,
                last: b,
                count: 0,
                out_of_order: 0,
                specials: Vec::new(),
                first_at: None,
                done_at: None,
            };
            let limit = Duration::from_secs(30);
            let outcome = tokio::time::timeout(limit, async {
                while r.done_at.is_none() {
                    match conn.read(&mut r).await {
                        Ok(Read::More) => {}
                        Ok(Read::End) => return Err("stream ended before the last message".to_owned()),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await;
            drop(conn);
            match outcome {
                Err(_) => problems.push(format!("replay not complete within {limit:?}")),
                Ok(Err(e)) => problems.push(e),
                Ok(Ok(())) => {}
            }
            if r.count != back || r.out_of_order != 0 || !r.specials.is_empty() {
                problems.push(format!(
                    "replay of {back}: got {} messages, {} out of order, other frames {:?}",
                    r.count, r.out_of_order, r.specials
                ));
            }
            if let Some(done) = r.done_at {
                times.push(done.duration_since(t0).as_secs_f64() * 1e3);
            }
            if let Some(first) = r.first_at {
                firsts.push(first.duration_since(t0).as_secs_f64() * 1e3);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        problems.dedup();
        let ok = problems.is_empty() && times.len() == spec.repeat.max(1);
        all_ok &= ok;
        let med = median(&mut times.clone());
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = times.iter().copied().fold(0.0, f64::max);
        let first_med = median(&mut firsts.clone());
        println!(
            "  {back} back (Last-Event-ID {last_id}): replay complete in median {:.2} ms (min {:.2}, max {:.2}; first message after {:.2} ms) over {} runs: {}",
            med.unwrap_or(f64::NAN),
            min,
            max,
            first_med.unwrap_or(f64::NAN),
            times.len(),
            if ok { "in order, complete".to_owned() } else { format!("PROBLEMS {problems:?}") }
        );
        figures.push(json!({"name": format!("replay {back} back ms"), "value": med, "agg": "median"}));
        replays.insert(
            back.to_string(),
            json!({"last_event_id": last_id, "median_ms": med, "min_ms": if times.is_empty() { None } else { Some(min) },
                   "max_ms": max, "first_ms": first_med, "times_ms": times, "ok": ok, "problems": problems}),
        );
    }
    let replay_m1 = MachineCpu::now();
    let ticks = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / crate::procfs::CLK_TCK,
        _ => 0.0,
    };
    let others_cpu_s = (replay_m0.busy_since(&replay_m1)
        - ticks(replay_srv0, env.server.cpu())
        - ticks(replay_self0, crate::procfs::self_cpu_ticks()))
    .max(0.0);
    let replay_window_s = replay_t0.elapsed().as_secs_f64();
    let (steal_s, steal_pct) = machine0.steal_since(&replay_m1);
    let noisy = others_cpu_s > 0.15 * replay_window_s || steal_pct > 2.0;
    println!(
        "  steal {steal_s:.2} s ({steal_pct:.2} %); other processes used {others_cpu_s:.2} CPU-s during the {replay_window_s:.2} s of replays{}",
        if noisy { " (noisy)" } else { "" }
    );
    println!("  {}", if all_ok { "OK" } else { "FAILED" });
    figures.push(fig("replays wrong (all runs)", if all_ok { 0.0 } else { 1.0 }, "sum"));
    figures.push(fig("steal %", steal_pct, "max"));
    (
        json!({
            "scenario": "resume",
            "ok": all_ok,
            "backlog": b,
            "publish_s": publish_s,
            "replays": replays,
            "steal_s": steal_s,
            "steal_pct": steal_pct,
            "others_cpu_s": others_cpu_s,
            "noisy": noisy,
            "figures": figures,
        }),
        all_ok,
    )
}

/// Median of `v` (sorted in place), None when empty.
pub(crate) fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}
