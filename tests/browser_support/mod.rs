//! Real-browser tests: headless Chromium driven over W3C WebDriver.
//!
//! - [`Browser`]: starts Debian's `chromedriver` on a free port and one Chromium session
//!   with a fresh profile; a small WebDriver client over reqwest (JSON over HTTP; no
//!   extra crate). Dropping it ends the session (Chromium exits) and kills the driver.
//! - [`Browser::start`] returns `None` (after a loud `SKIPPED` line on stderr) when
//!   Chromium or chromedriver is not installed, unless `SSEHUB_STRICT_TESTS=1`, which
//!   turns the skip into a failure (CI sets it).
//! - [`proxy::CutProxy`]: a TCP forwarder whose connections a test can cut, to play a
//!   network drop between the page and the server.
//!
//! Every wait has a deadline: no test can hang.
#![allow(dead_code)]

pub(crate) mod proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// How long chromedriver may take to say it listens.
const DRIVER_START: Duration = Duration::from_secs(10);
/// Deadline of one WebDriver command (a session start included).
const COMMAND: Duration = Duration::from_secs(30);
/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Browsers running at once in this test binary (2 cores: more only slows every test down).
const MAX_BROWSERS: usize = 2;

/// Where screenshots go: `target/browser-screenshots/`.
pub(crate) fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("browser-screenshots")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The Chromium executable: `SSEHUB_CHROMIUM` (missing if that is no file), Debian's
/// real binary (not its shell wrapper), or the first of the usual names on `PATH`.
fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SSEHUB_CHROMIUM") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let debian = Path::new("/usr/lib/chromium/chromium");
    if debian.is_file() {
        return Some(debian.to_path_buf());
    }
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .find_map(|name| on_path(name))
}

fn find_chromedriver() -> Option<PathBuf> {
    match std::env::var_os("SSEHUB_CHROMEDRIVER") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => on_path("chromedriver"),
    }
}

/// Whether a missing tool fails the test (CI) instead of skipping it.
fn strict() -> bool {
    std::env::var("SSEHUB_STRICT_TESTS").is_ok_and(|v| v == "1")
}

/// A counting semaphore over threads (each `#[tokio::test]` runs on its own thread).
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: Slots = Slots {
    used: Mutex::new(0),
    freed: Condvar::new(),
};

struct Slot;

impl Slot {
    fn take() -> Slot {
        let mut used = SLOTS.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= MAX_BROWSERS {
            used = SLOTS.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *SLOTS.used.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        SLOTS.freed.notify_one();
    }
}

/// One chromedriver process and one Chromium session.
pub(crate) struct Browser {
    driver: Child,
    port: u16,
    session: String,
    http: reqwest::Client,
    scratch: Scratch,
    test: String,
    _slot: Slot,
}

impl Browser {
    /// Starts a headless Chromium for the test `test`, or returns `None` after printing
    /// `SKIPPED (chromium not installed): ...` when Chromium or chromedriver is missing
    /// (a panic instead under `SSEHUB_STRICT_TESTS=1`).
    pub(crate) async fn start(test: &str) -> Option<Browser> {
        let (chromium, driver) = match (find_chromium(), find_chromedriver()) {
            (Some(chromium), Some(driver)) => (chromium, driver),
            (chromium, driver) => {
                let missing = [("chromium", chromium.is_none()), ("chromedriver", driver.is_none())]
                    .iter()
                    .filter(|(_, missing)| *missing)
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(" and ");
                let why = format!(
                    "{test}: {missing} not found. Install them with `apt-get install chromium chromium-driver` \
                     (or point SSEHUB_CHROMIUM / SSEHUB_CHROMEDRIVER at them)"
                );
                if strict() {
                    panic!("SSEHUB_STRICT_TESTS=1 and {why}");
                }
                // Straight to the process's stderr: eprintln! would be captured (and hidden)
                // by the test harness for a test that passes.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n**********\nSKIPPED (chromium not installed): {why}\n**********"
                );
                return None;
            }
        };
        let slot = Slot::take();
        let unique = format!("{}-{}-{}", test, std::process::id(), nanos());
        // Removed on drop, also when starting fails.
        let scratch = Scratch {
            profile: std::env::temp_dir().join(format!("ssehub-chromium-{unique}")),
            driver_log: std::env::temp_dir().join(format!("ssehub-chromedriver-{unique}.log")),
        };
        std::fs::create_dir_all(&scratch.profile).expect("create the Chromium profile directory");
        let (mut child, port) = start_driver(&driver, &scratch.driver_log);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(COMMAND)
            .build()
            .expect("HTTP client");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            // Several windows play several people: keep background ones running at full speed.
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--window-size=1280,860",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            &format!("--user-data-dir={}", scratch.profile.display()),
        ];
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "unhandledPromptBehavior": "dismiss",
                    "goog:chromeOptions": { "binary": chromium, "args": args },
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let url = format!("http://127.0.0.1:{port}/session");
        let answer = match http.post(&url).json(&capabilities).send().await {
            Ok(response) => response.json::<Value>().await.unwrap_or(Value::Null),
            Err(e) => Value::String(e.to_string()),
        };
        let Some(session) = answer["value"]["sessionId"].as_str().map(str::to_owned) else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&scratch.driver_log).unwrap_or_default();
            panic!("{test}: Chromium did not start: {answer}\nchromedriver log:\n{log}");
        };
        Some(Browser {
            driver: child,
            port,
            session,
            http,
            scratch,
            test: test.to_owned(),
            _slot: slot,
        })
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}/session/{}{}", self.port, self.session, path);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        } else if method == reqwest::Method::POST {
            request = request.json(&json!({}));
        }
        let response = request.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let value: Value = response.json().await.map_err(|e| format!("{method} {path}: {e}"))?;
        if let Some(error) = value["value"]["error"].as_str() {
            return Err(format!(
                "{method} {path}: {error}: {}",
                value["value"]["message"].as_str().unwrap_or("")
            ));
        }
        Ok(value["value"].clone())
    }

    #[track_caller]
    fn must<'a>(
        &'a self,
        method: reqwest::Method,
        path: &'a str,
        body: Option<Value>,
    ) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            match self.command(method, path, body).await {
                Ok(value) => value,
                Err(error) => panic!("{caller}: WebDriver: {error}"),
            }
        }
    }

    /// Loads `url` in the current window and waits for it to load.
    pub(crate) async fn goto(&self, url: &str) {
        self.must(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Reloads the current page.
    pub(crate) async fn refresh(&self) {
        self.must(reqwest::Method::POST, "/refresh", None).await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    #[track_caller]
    pub(crate) fn exec<'a>(&'a self, script: &'a str, args: Value) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let body = json!({ "script": script, "args": args });
            match self.command(reqwest::Method::POST, "/execute/sync", Some(body)).await {
                Ok(value) => value,
                Err(error) => panic!("{caller}: script failed: {error}\nscript: {script}"),
            }
        }
    }

    /// Runs `script` and returns its value, or the error text.
    pub(crate) async fn try_exec(&self, script: &str, args: Value) -> Result<Value, String> {
        let body = json!({ "script": script, "args": args });
        self.command(reqwest::Method::POST, "/execute/sync", Some(body)).await
    }

    /// Polls the JavaScript expression `expr` until it is truthy (every 50 ms, at most
    /// `within`); returns its value. Panics with `what` and the page's text otherwise.
    #[track_caller]
    pub(crate) fn wait_for<'a>(
        &'a self,
        what: &'a str,
        expr: &'a str,
        within: Duration,
    ) -> impl std::future::Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let script = format!("return ({expr});");
            let end = tokio::time::Instant::now() + within;
            loop {
                let last = match self.try_exec(&script, json!([])).await {
                    Ok(value) if truthy(&value) => return value,
                    Ok(value) => value,
                    Err(error) => Value::String(error),
                };
                if tokio::time::Instant::now() >= end {
                    let text = self
                        .try_exec("return document.body ? document.body.innerText : ''", json!([]))
                        .await
                        .unwrap_or_default();
                    panic!(
                        "{caller}: timed out after {within:?} waiting for {what}\n  expression: {expr}\n  last value: {last}\n  page text:\n{}",
                        text.as_str().unwrap_or("")
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The element matching `css` (waits up to 5 s for it to exist).
    #[track_caller]
    pub(crate) fn find<'a>(&'a self, css: &'a str) -> impl std::future::Future<Output = String> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let end = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let body = json!({ "using": "css selector", "value": css });
                match self.command(reqwest::Method::POST, "/element", Some(body)).await {
                    Ok(value) => return value[ELEMENT].as_str().expect("element reference").to_owned(),
                    Err(error) if tokio::time::Instant::now() >= end => {
                        panic!("{caller}: no element {css:?}: {error}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }

    /// Clicks the element matching `css`, as a user would (it must be visible).
    #[track_caller]
    pub(crate) fn click<'a>(&'a self, css: &'a str) -> impl std::future::Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let element = self.find(css).await;
            let path = format!("/element/{element}/click");
            if let Err(error) = self.command(reqwest::Method::POST, &path, None).await {
                panic!("{caller}: click {css:?}: {error}");
            }
        }
    }

    /// Clears the field matching `css` and types `text` into it, key by key.
    #[track_caller]
    pub(crate) fn type_into<'a>(&'a self, css: &'a str, text: &'a str) -> impl std::future::Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let element = self.find(css).await;
            let clear = format!("/element/{element}/clear");
            let value = format!("/element/{element}/value");
            if let Err(error) = self.command(reqwest::Method::POST, &clear, None).await {
                panic!("{caller}: clear {css:?}: {error}");
            }
            if let Err(error) = self
                .command(reqwest::Method::POST, &value, Some(json!({ "text": text })))
                .await
            {
                panic!("{caller}: type into {css:?}: {error}");
            }
        }
    }

    /// The text of every element matching `css`, in document order.
    pub(crate) async fn texts(&self, css: &str) -> Vec<String> {
        let value = self
            .exec(
                "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent);",
                json!([css]),
            )
            .await;
        serde_json::from_value(value).expect("a list of strings")
    }

    /// Opens a new window, switches to it and returns its handle.
    pub(crate) async fn new_window(&self) -> String {
        let value = self
            .must(reqwest::Method::POST, "/window/new", Some(json!({ "type": "window" })))
            .await;
        let handle = value["handle"].as_str().expect("window handle").to_owned();
        self.switch_to(&handle).await;
        handle
    }

    /// The current window's handle.
    pub(crate) async fn window(&self) -> String {
        let value = self.must(reqwest::Method::GET, "/window", None).await;
        value.as_str().expect("window handle").to_owned()
    }

    /// Makes `handle` the window the next commands go to.
    pub(crate) async fn switch_to(&self, handle: &str) {
        self.must(reqwest::Method::POST, "/window", Some(json!({ "handle": handle })))
            .await;
    }

    /// Saves a PNG of the current window as `target/browser-screenshots/<name>.png`.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let value = self.must(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(value.as_str().expect("base64 screenshot"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The browser console so far (errors included), for diagnostics.
    pub(crate) async fn console(&self) -> String {
        let url = format!("http://127.0.0.1:{}/session/{}/se/log", self.port, self.session);
        let answer = self.http.post(&url).json(&json!({ "type": "browser" })).send().await;
        match answer {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        }
    }

    /// Console entries at level SEVERE (uncaught exceptions, failed module loads).
    pub(crate) async fn console_errors(&self) -> Vec<String> {
        let text = self.console().await;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        value["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session so that Chromium exits with it (a killed driver would leave
        // it running). Blocking and short: Drop cannot await.
        delete_session(self.port, &self.session);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(&self.scratch.driver_log) {
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "---- chromedriver log of {} (last lines) ----\n{}",
                    self.test,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

/// A browser's profile directory and driver log, removed when dropped.
struct Scratch {
    profile: PathBuf,
    driver_log: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_file(&self.driver_log);
    }
}

/// Starts chromedriver on a port it picks itself and reads that port from its banner
/// (a few tries: a driver that exits at once is started again).
fn start_driver(driver: &Path, log: &Path) -> (Child, u16) {
    let mut failures = Vec::new();
    for _ in 0..3 {
        match try_start_driver(driver, log) {
            Ok(started) => return started,
            Err(why) => failures.push(why),
        }
    }
    panic!("chromedriver did not start: {failures:#?}")
}

fn try_start_driver(driver: &Path, log: &Path) -> Result<(Child, u16), String> {
    let mut child = Command::new(driver)
        .arg("--port=0")
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", driver.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let seen = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let seen = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // "ChromeDriver was started successfully on port 34609."
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    if let Ok(port) = rest.trim().trim_end_matches('.').parse::<u16>() {
                        let _ = tx.send(port);
                    }
                }
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }
    match rx.recv_timeout(DRIVER_START) {
        Ok(port) if port != 0 => {
            // Keep draining stderr so the driver never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            Ok((child, port))
        }
        other => {
            let _ = child.kill();
            let status = child.wait();
            let mut errors = String::new();
            let _ = stderr.read_to_string(&mut errors);
            let out = seen.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
            Err(format!(
                "{other:?} within {DRIVER_START:?}; exit {status:?}; stdout: {out}; stderr: {errors}"
            ))
        }
    }
}

/// `DELETE /session/{id}` over a plain blocking socket.
fn delete_session(port: u16, session: &str) {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request =
        format!("DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    // chromedriver answers once Chromium has quit; it may keep the connection open, so
    // read one whole answer (head plus Content-Length bytes), not up to the end.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(head_end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if answer.len() >= head_end + 4 + length {
                return;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Standard base64 (the alphabet of WebDriver screenshots), padding optional.
fn base64_decode(text: &str) -> Vec<u8> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, d)| n | (d << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
}
