//! The browser side, in a real browser: headless Chromium runs the demo pages and
//! `static/ssehub.js` against the real `ssehub` binary on an ephemeral port.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`apt-get install chromium
//! chromium-driver`). Without them every test here prints `SKIPPED (chromium not
//! installed)` and passes, unless `SSEHUB_STRICT_TESTS=1` (CI), which fails them.
//! Screenshots of each page go to `target/browser-screenshots/`.

mod browser_support;
mod common;

use std::time::Duration;

use browser_support::proxy::CutProxy;
use browser_support::Browser;
use common::*;
use serde_json::{json, Value};

/// Deadline of one thing a page should show.
const SHOW: Duration = Duration::from_secs(10);

/// The state badge of a demo page says its stream is open.
const LIVE: &str = "document.getElementById('conn').dataset.state === 'open'";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Logs in on a chat-like page (chat, receiver, sender) at `url` and waits for its stream.
async fn join(browser: &Browser, url: &str, name: &str) {
    browser.goto(url).await;
    browser.type_into("#name", name).await;
    browser.click("#join").await;
    browser.wait_for("the page to go live", LIVE, SHOW).await;
}

/// `(from, text)` of every chat message on the page, in order.
async fn chat_lines(browser: &Browser) -> Vec<(String, String)> {
    let value = browser
        .exec(
            "return [...document.querySelectorAll('#messages li.msg')].map((li) =>
               [li.querySelector('.from').textContent, li.querySelector('.text').textContent]);",
            json!([]),
        )
        .await;
    serde_json::from_value(value).expect("pairs of strings")
}

/// Texts of the chat messages on the page, in order.
async fn chat_texts(browser: &Browser) -> Vec<String> {
    chat_lines(browser).await.into_iter().map(|(_, text)| text).collect()
}

/// Waits until the chat page shows a message with exactly this text.
async fn wait_chat_text(browser: &Browser, text: &str) {
    let expr = format!(
        "[...document.querySelectorAll('#messages li.msg .text')].some((e) => e.textContent === {})",
        json!(text)
    );
    browser.wait_for(&format!("chat message {text:?}"), &expr, SHOW).await;
}

/// A client registered through the demo backend, as a page would get it.
async fn demo_login(server: &TestServer, channel: &str, name: &str) -> Value {
    let response = server
        .client()
        .post(server.url("/demo/login"))
        .json(&json!({ "channel": channel, "name": name }))
        .send()
        .await
        .expect("POST /demo/login");
    assert_eq!(response.status(), 201, "demo login of {name}");
    response.json().await.expect("login answer")
}

/// Sends `chat.message` `{text}` as the client holding `token` (its `from` is set by the server).
async fn say(server: &TestServer, channel: &str, token: &str, text: &str) {
    let response = server
        .client()
        .post(server.url(&format!("/channels/{channel}/messages")))
        .bearer_auth(token)
        .json(&json!({ "name": "chat.message", "contents": { "text": text } }))
        .send()
        .await
        .expect("POST message");
    assert_eq!(response.status(), 201, "send {text:?}");
}

/// Posts a guestbook comment through the demo backend.
async fn comment(server: &TestServer, name: &str, text: &str) -> String {
    let response = server
        .client()
        .post(server.url("/demo/feed"))
        .json(&json!({ "channel": "demo-feed", "name": name, "text": text }))
        .send()
        .await
        .expect("POST /demo/feed");
    assert_eq!(response.status(), 201, "comment {text:?}");
    let body: Value = response.json().await.expect("feed answer");
    body["id"].as_str().expect("id").to_owned()
}

/// Texts of the guestbook comments on the page, newest first.
async fn feed_texts(browser: &Browser) -> Vec<String> {
    browser.texts("#comments blockquote .text").await
}

/// A property of the page's subscription (`window.<demo>.subscription.<path>`).
async fn sub_value(browser: &Browser, demo: &str, path: &str) -> Value {
    browser
        .exec(&format!("return window.{demo}.subscription.{path};"), json!([]))
        .await
}

/// Asserts `texts` is exactly `expected`: nothing lost, nothing doubled, in order.
#[track_caller]
fn assert_exactly(texts: &[String], expected: &[String], what: &str) {
    assert_eq!(texts, expected, "{what}: every message once, in order");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The demo backend is safe by default: off when a publisher key is configured unless
/// `--demo` is given, and limited to `demo-*` channels. (No browser needed.)
#[tokio::test]
async fn demo_routes_are_safe_by_default() {
    let login = |server: &TestServer, channel: &str, name: &str| {
        server
            .client()
            .post(server.url("/demo/login"))
            .json(&json!({ "channel": channel, "name": name }))
            .send()
    };
    const KEY: &str = "0123456789abcdef0123";

    // A publisher key and no --demo: the routes do not exist; the pages' files still do.
    let keyed = TestServer::start(&["--publisher-key", KEY]);
    let response = login(&keyed, "demo-chat", "Ann").await.unwrap();
    expect_error(response, 404, "not_found").await;
    assert_eq!(keyed.get("/demo/ui.js", NONE).await.status(), 200);
    drop(keyed);

    // With --demo they work, and what they hand out works with the keyed server.
    let demo = TestServer::start(&["--publisher-key", KEY, "--demo"]);
    let response = login(&demo, "demo-chat", "Ann").await.unwrap();
    assert_eq!(response.status(), 201);
    let ann: Value = response.json().await.unwrap();
    assert!(ann["public_token"].as_str().unwrap().starts_with("ann-"), "{ann}");
    assert_eq!(ann["display_name"], "Ann");
    assert!(ann["last_id"].is_null(), "{ann}");
    let token = ann["private_token"].as_str().unwrap();
    let stream = demo.subscribe("demo-chat", &format!("?token={token}"), SSE).await;
    assert_eq!(stream.status, 200);
    say(&demo, "demo-chat", token, "hello").await;
    let response = login(&demo, "demo-chat", "Ann").await.unwrap();
    expect_error(response, 409, "client_exists").await;
    let response = login(&demo, "chat", "Bob").await.unwrap();
    let error = expect_error(response, 400, "schema_violation").await;
    assert_eq!(error["details"][0]["pointer"], "/channel");
    let response = login(&demo, "demo-chat", "   ").await.unwrap();
    expect_error(response, 400, "schema_violation").await;
    let response = demo.get("/demo/login", NONE).await;
    expect_error(response, 405, "method_not_allowed").await;
    let response = demo
        .request(reqwest::Method::POST, "/demo/login", Some("text/plain"), "{}")
        .await;
    expect_error(response, 415, "unsupported_media_type").await;

    // Logout removes the client: its private token stops working.
    let response = demo
        .client()
        .post(demo.url("/demo/logout"))
        .json(&json!({ "channel": "demo-chat", "private_token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let (status, _) = demo
        .get_json(&format!(
            "/channels/demo-chat/clients/{}",
            ann["public_token"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 404);
}

/// Every page loads its module without a script error; the index links every demo.
#[tokio::test]
async fn every_page_loads_without_script_errors() {
    let Some(browser) = Browser::start("pages").await else {
        return;
    };
    let server = TestServer::start(&[]);
    browser.goto(&server.url("/")).await;
    let links = browser.texts("main a.demo h3").await;
    assert_eq!(links, ["Chat", "Sender / Receiver", "Live feed", "Live channel"]);
    browser.screenshot("index").await;
    for name in ["chat", "receiver", "sender", "feed", "live"] {
        let page = format!("/{name}.html");
        browser.goto(&server.url(&page)).await;
        // Each page's module sets its window.<name>Demo object last: it ran to the end.
        browser
            .wait_for(
                &format!("{page} to run its script"),
                "window.chatDemo || window.receiverDemo || window.senderDemo || window.feedDemo || window.liveDemo",
                SHOW,
            )
            .await;
        browser.screenshot(&format!("first-visit-{name}")).await;
    }
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

/// Two chat pages log in, see each other online and exchange messages.
#[tokio::test]
async fn two_chat_pages_exchange_messages() {
    let Some(browser) = Browser::start("chat").await else {
        return;
    };
    let server = TestServer::start(&[]);
    let ann = browser.window().await;
    join(&browser, &server.url("/chat.html"), "Ann").await;
    let bob = browser.new_window().await;
    join(&browser, &server.url("/chat.html"), "Bob").await;

    // Presence: the list when the stream opens, then client.connected events.
    browser
        .wait_for(
            "Bob to see Ann online",
            "[...document.querySelectorAll('#people li.online .who')].some((e) => e.textContent === 'Ann')",
            SHOW,
        )
        .await;
    browser.switch_to(&ann).await;
    browser
        .wait_for(
            "Ann to see Bob join",
            "[...document.querySelectorAll('#people li.online .who')].some((e) => e.textContent === 'Bob')",
            SHOW,
        )
        .await;

    browser.type_into("#text", "Hello Bob, are you there?").await;
    browser.click("#send").await;
    wait_chat_text(&browser, "Hello Bob, are you there?").await;

    browser.switch_to(&bob).await;
    wait_chat_text(&browser, "Hello Bob, are you there?").await;
    browser.type_into("#text", "Hi Ann! Loud and clear.").await;
    browser.click("#send").await;
    wait_chat_text(&browser, "Hi Ann! Loud and clear.").await;

    browser.switch_to(&ann).await;
    wait_chat_text(&browser, "Hi Ann! Loud and clear.").await;
    browser.type_into("#text", "Great, the stream works both ways.").await;
    browser.click("#send").await;
    wait_chat_text(&browser, "Great, the stream works both ways.").await;

    let expected: Vec<(String, String)> = [
        ("Ann", "Hello Bob, are you there?"),
        ("Bob", "Hi Ann! Loud and clear."),
        ("Ann", "Great, the stream works both ways."),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(chat_lines(&browser).await, expected, "Ann's page");
    browser.switch_to(&bob).await;
    wait_chat_text(&browser, "Great, the stream works both ways.").await;
    assert_eq!(chat_lines(&browser).await, expected, "Bob's page");
    browser.switch_to(&ann).await;
    browser.screenshot("chat").await;
}

/// The sender page picks one receiver; only that receiver's page shows the message.
#[tokio::test]
async fn sender_reaches_only_the_chosen_receiver() {
    let Some(browser) = Browser::start("sender").await else {
        return;
    };
    // The server's own presence events this time (the chat test uses the demo's).
    let server = TestServer::start(&["--policy", "demo-*:presence=on"]);
    let alice = browser.window().await;
    join(&browser, &server.url("/receiver.html"), "Alice").await;
    let bob = browser.new_window().await;
    join(&browser, &server.url("/receiver.html"), "Bob").await;
    let sender = browser.new_window().await;
    join(&browser, &server.url("/sender.html"), "Dispatch").await;

    let online = "[...document.querySelectorAll('#recipients li.online .who')].map((e) => e.textContent).sort().join(',') === 'Alice,Bob'";
    browser
        .wait_for("both receivers in the sender's list", online, SHOW)
        .await;
    browser.click("#recipients li[data-token^='bob-']").await;
    browser
        .wait_for(
            "Bob to be the recipient",
            "document.getElementById('to-name').textContent === 'Bob'",
            SHOW,
        )
        .await;
    browser
        .type_into("#text", "Only for Bob: the parcel is at the door.")
        .await;
    browser.click("#send").await;
    browser
        .wait_for(
            "the sent log",
            "document.querySelectorAll('#sent .item').length === 1",
            SHOW,
        )
        .await;

    browser.switch_to(&bob).await;
    browser
        .wait_for(
            "Bob's message",
            "document.querySelectorAll('#messages .item').length === 1",
            SHOW,
        )
        .await;
    assert_eq!(
        browser.texts("#messages .item .text").await,
        ["Only for Bob: the parcel is at the door."]
    );
    assert_eq!(browser.texts("#messages .item .from").await, ["Dispatch"]);
    browser.screenshot("receiver").await;

    // Now one for Alice, which Bob must not get either.
    browser.switch_to(&sender).await;
    browser.click("#recipients li[data-token^='alice-']").await;
    browser.type_into("#text", "Alice, your meeting moved to 3pm.").await;
    browser.click("#send").await;
    browser
        .wait_for(
            "the sent log",
            "document.querySelectorAll('#sent .item').length === 2",
            SHOW,
        )
        .await;
    browser.screenshot("sender").await;

    browser.switch_to(&alice).await;
    browser
        .wait_for(
            "Alice's message",
            "document.querySelectorAll('#messages .item').length === 1",
            SHOW,
        )
        .await;
    assert_eq!(
        browser.texts("#messages .item .text").await,
        ["Alice, your meeting moved to 3pm."],
        "Alice never gets Bob's message"
    );
    // Bob's page had all the time Alice's needed: still only his own message.
    browser.switch_to(&bob).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        browser.texts("#messages .item .text").await,
        ["Only for Bob: the parcel is at the door."],
        "Bob never gets Alice's message"
    );
}

/// Streams recycled by timeout frames mid-conversation lose and double nothing: the
/// messages sent while the page is between two streams arrive once, in order.
#[tokio::test]
async fn timeout_frames_mid_conversation_lose_nothing() {
    let Some(browser) = Browser::start("timeout").await else {
        return;
    };
    let server = TestServer::start(&["--retry-ms", "1000"]);
    join(&browser, &server.url("/chat.html?timeout=1"), "Ann").await;
    let bot = demo_login(&server, "demo-chat", "Bot").await;
    let token = bot["private_token"].as_str().unwrap();

    let mut expected = Vec::new();
    for round in 0..2 {
        for i in 1..=3 {
            let text = format!("round {round} live {i}");
            say(&server, "demo-chat", token, &text).await;
            expected.push(text);
        }
        wait_chat_text(&browser, expected.last().unwrap()).await;
        // The stream idles for a second, gets a timeout frame and ends; EventSource
        // waits `retry` (1 s) before it reconnects. Send while it waits.
        let between = format!(
            "window.chatDemo.subscription.stats.timeouts > {round} && window.chatDemo.subscription.state === 'reconnecting'"
        );
        browser.wait_for("a timeout frame", &between, SHOW).await;
        for i in 1..=3 {
            let text = format!("round {round} between streams {i}");
            say(&server, "demo-chat", token, &text).await;
            expected.push(text);
        }
        wait_chat_text(&browser, expected.last().unwrap()).await;
    }
    assert_exactly(&chat_texts(&browser).await, &expected, "after two timeout frames");
    assert_eq!(
        sub_value(&browser, "chatDemo", "stats.duplicates").await,
        0,
        "the server never sent a message twice"
    );
    assert_eq!(
        sub_value(&browser, "chatDemo", "stats.failures").await,
        0,
        "a timeout is not a failure"
    );
    assert!(sub_value(&browser, "chatDemo", "stats.opens").await.as_u64().unwrap() >= 3);
}

/// A network drop (every connection cut, the server unreachable for a while) is
/// survived: the library backs off, reconnects with the last id, and the messages
/// sent meanwhile appear once, in order.
#[tokio::test]
async fn network_drop_resumes_from_the_last_id() {
    let Some(browser) = Browser::start("network").await else {
        return;
    };
    let server = TestServer::start(&[]);
    let proxy = CutProxy::start(&server.addr()).await;
    join(&browser, &proxy.url("/chat.html"), "Ann").await;
    let bot = demo_login(&server, "demo-chat", "Bot").await;
    let token = bot["private_token"].as_str().unwrap();

    let mut expected = Vec::new();
    for i in 1..=3 {
        let text = format!("before the drop {i}");
        say(&server, "demo-chat", token, &text).await;
        expected.push(text);
    }
    wait_chat_text(&browser, expected.last().unwrap()).await;

    // Short delays so the test is quick (the defaults start at a 3 s window).
    browser
        .exec(
            "window.chatDemo.subscription.backoff = { initial: 300, max: 800, min: 50 };",
            json!([]),
        )
        .await;
    proxy.set_down(true);
    proxy.cut();
    browser
        .wait_for(
            "reconnect attempts to fail while the network is down",
            "window.chatDemo.subscription.stats.reconnects >= 3",
            SHOW,
        )
        .await;
    for i in 1..=3 {
        let text = format!("during the drop {i}");
        say(&server, "demo-chat", token, &text).await;
        expected.push(text);
    }
    proxy.set_down(false);
    wait_chat_text(&browser, expected.last().unwrap()).await;
    browser.wait_for("the stream to be live again", LIVE, SHOW).await;
    for i in 1..=2 {
        let text = format!("after the drop {i}");
        say(&server, "demo-chat", token, &text).await;
        expected.push(text);
    }
    wait_chat_text(&browser, expected.last().unwrap()).await;
    assert_exactly(&chat_texts(&browser).await, &expected, "after a network drop");
    assert_eq!(sub_value(&browser, "chatDemo", "stats.duplicates").await, 0);
    assert_eq!(sub_value(&browser, "chatDemo", "stats.failures").await, 0);
}

/// The library's reconnect delays grow exponentially and are spread by jitter, so a
/// server restart does not bring every page back at the same moment.
#[tokio::test]
async fn reconnect_backoff_has_jitter() {
    let Some(browser) = Browser::start("backoff").await else {
        return;
    };
    let server = TestServer::start(&[]);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // nothing listens there any more: connections are refused
    browser.goto(&server.url("/")).await;
    let script = r#"
        const [port] = arguments;
        return import('/ssehub.js').then((lib) => {
          window.delays = [];
          window.subs = [];
          for (let i = 0; i < 20; i += 1) {
            const sub = lib.subscribe('http://127.0.0.1:' + port + '/channels/x/events', {
              storage: false, backoff: { initial: 400, max: 1600, min: 20 },
            });
            const schedule = sub.scheduleReconnect.bind(sub);
            const mine = [];
            sub.scheduleReconnect = () => { schedule(); mine.push(sub.nextDelay); };
            window.delays.push(mine);
            window.subs.push(sub);
          }
          return true;
        });
    "#;
    browser.exec(script, json!([closed])).await;
    browser
        .wait_for(
            "three attempts per subscription",
            "window.delays.every((d) => d.length >= 3)",
            Duration::from_secs(15),
        )
        .await;
    let delays: Vec<Vec<f64>> = serde_json::from_value(
        browser
            .exec(
                "window.subs.forEach((s) => s.close()); return window.delays.map((d) => d.slice(0, 3));",
                json!([]),
            )
            .await,
    )
    .unwrap();
    for attempts in &delays {
        for (n, delay) in attempts.iter().enumerate() {
            let cap = (400.0 * 2f64.powi(i32::try_from(n).expect("a small count"))).min(1600.0);
            assert!(
                (20.0..=cap).contains(delay),
                "attempt {n}: {delay} ms not in 20..={cap}"
            );
        }
    }
    let first: Vec<f64> = delays.iter().map(|d| d[0]).collect();
    let spread = first.iter().cloned().fold(f64::MIN, f64::max) - first.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        spread > 150.0,
        "first reconnects of 20 pages spread over {spread} ms only: {first:?}"
    );
    let third: Vec<f64> = delays.iter().map(|d| d[2]).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(mean(&third) > mean(&first), "delays grow: {first:?} then {third:?}");
}

/// A page that comes back (navigated away and back, or reloaded) resumes from the
/// last message it saw: what was posted meanwhile appears, nothing twice.
#[tokio::test]
async fn a_reloaded_page_resumes_where_it_was() {
    let Some(browser) = Browser::start("reload").await else {
        return;
    };
    let server = TestServer::start(&[]);
    let first = browser.window().await;
    browser.goto(&server.url("/feed.html")).await;
    browser.wait_for("the feed to go live", LIVE, SHOW).await;
    let other = browser.new_window().await;
    browser.goto(&server.url("/feed.html")).await;
    browser.wait_for("the second feed to go live", LIVE, SHOW).await;

    // The form posts; every open page shows the comment at once.
    browser.type_into("#name", "Carol").await;
    browser.type_into("#comment", "First! Lovely guestbook.").await;
    browser.click("#post").await;
    browser
        .wait_for(
            "the comment here",
            "document.querySelectorAll('#comments blockquote').length === 1",
            SHOW,
        )
        .await;
    browser.switch_to(&first).await;
    browser
        .wait_for(
            "the comment on the other page",
            "document.querySelectorAll('#comments blockquote').length === 1",
            SHOW,
        )
        .await;
    assert_eq!(feed_texts(&browser).await, ["First! Lovely guestbook."]);
    assert_eq!(browser.texts("#comments blockquote .from").await, ["Carol"]);
    comment(&server, "Dan", "Second comment").await;
    browser
        .wait_for(
            "two comments",
            "document.querySelectorAll('#comments blockquote').length === 2",
            SHOW,
        )
        .await;

    // Leave the page; comments posted while it is gone come back when it does.
    browser.goto("about:blank").await;
    comment(&server, "Erin", "Posted while you were away").await;
    let last = comment(&server, "Frank", "Also while you were away").await;
    browser.goto(&server.url("/feed.html")).await;
    browser
        .wait_for(
            "four comments",
            "document.querySelectorAll('#comments blockquote').length === 4",
            SHOW,
        )
        .await;
    let expected = [
        "Also while you were away",
        "Posted while you were away",
        "Second comment",
        "First! Lovely guestbook.",
    ];
    assert_eq!(feed_texts(&browser).await, expected);
    assert_eq!(
        sub_value(&browser, "feedDemo", "stats.messages").await,
        2,
        "only the two missed comments came over the stream"
    );
    assert_eq!(sub_value(&browser, "feedDemo", "lastEventId").await, last.as_str());

    // A plain reload: the same page, nothing replayed twice.
    browser.refresh().await;
    browser.wait_for("the feed to go live again", LIVE, SHOW).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(feed_texts(&browser).await, expected);
    assert_eq!(sub_value(&browser, "feedDemo", "stats.messages").await, 0);
    comment(&server, "Grace", "After the reload").await;
    browser
        .wait_for(
            "five comments",
            "document.querySelectorAll('#comments blockquote').length === 5",
            SHOW,
        )
        .await;
    browser.screenshot("feed").await;

    // The other page saw everything live, once.
    browser.switch_to(&other).await;
    browser
        .wait_for(
            "five comments there too",
            "document.querySelectorAll('#comments blockquote').length === 5",
            SHOW,
        )
        .await;
}

/// Gap frames reach the page's gap handler and the replay that follows is shown;
/// failure frames reach the failure handler, which stops instead of looping.
#[tokio::test]
async fn gap_and_failure_frames_reach_their_handlers() {
    let Some(browser) = Browser::start("failure").await else {
        return;
    };
    let server = TestServer::start(&[]);

    // The Live channel page: a working subscription and send first.
    browser.goto(&server.url("/live.html")).await;
    browser.click("#sub-btn").await;
    browser.wait_for("the stream", LIVE, SHOW).await;
    browser.click("#send-form button").await;
    browser
        .wait_for(
            "the message entry",
            "document.querySelector('#log .entry.message')",
            SHOW,
        )
        .await;
    browser.click("#sub-btn").await; // unsubscribe
    let id = browser
        .exec(
            "return document.querySelector('#log .entry.message').dataset.id;",
            json!([]),
        )
        .await;
    let id = id.as_str().unwrap();

    // Resume positions the server cannot honour: a gap frame, then the history again
    // (even where its ids sort before the position the page held).
    for (position, reason) in [
        (format!("{}-1", other_epoch(&epoch_of(id))), "other_epoch"),
        (format!("{}-999", epoch_of(id)), "unknown_id"),
    ] {
        browser
            .exec(
                "sessionStorage.setItem('ssehub:lastEventId:demo', arguments[0]);",
                json!([position]),
            )
            .await;
        browser.click("#sub-btn").await;
        let gap = format!("document.querySelector('#log .entry.gap .name')?.textContent === '{reason}'");
        browser.wait_for("the gap entry", &gap, SHOW).await;
        browser
            .wait_for(
                "the message replayed after the gap",
                &format!("document.querySelector('#log .entry')?.dataset.id === '{id}'"),
                SHOW,
            )
            .await;
        browser.click("#sub-btn").await; // unsubscribe
    }

    // An unknown token: the server answers with a failure frame.
    browser.type_into("#token", "no-such-client-token").await;
    browser.click("#sub-btn").await;
    browser
        .wait_for(
            "the failure entry",
            "document.querySelector('#log .entry.failure[data-code=\"unknown_client\"]')",
            SHOW,
        )
        .await;
    // EventSource would reconnect every `retry` ms by itself; the library must not.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        browser
            .exec(
                "return document.querySelectorAll('#log .entry.failure').length;",
                json!([])
            )
            .await,
        1,
        "one failure, no reconnect loop"
    );
    assert_eq!(sub_value(&browser, "liveDemo", "state").await, "failed");
    assert_eq!(sub_value(&browser, "liveDemo", "stats.reconnects").await, 0);
    assert_eq!(
        browser
            .exec("return document.getElementById('conn').dataset.state;", json!([]))
            .await,
        "failed"
    );
    browser.screenshot("live").await;

    // The chat page: the client is removed by the backend; the page says so and stops.
    join(&browser, &server.url("/chat.html"), "Carol").await;
    let public = browser
        .exec(
            "return JSON.parse(sessionStorage.getItem('ssehub-demo:session:demo-chat')).public_token;",
            json!([]),
        )
        .await;
    let response = server
        .client()
        .delete(server.url(&format!("/channels/demo-chat/clients/{}", public.as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    browser
        .wait_for(
            "the removal notice",
            "document.getElementById('login-error').textContent === 'You were removed from the chat.'",
            SHOW,
        )
        .await;
    assert_eq!(sub_value(&browser, "chatDemo", "state").await, "failed");
}

/// Names and texts are shown as text: markup in them creates no element.
#[tokio::test]
async fn markup_in_names_renders_as_text() {
    let Some(browser) = Browser::start("escape").await else {
        return;
    };
    let server = TestServer::start(&[]);
    let name = r#"<img src=x onerror="window.__xss=1">"#;
    let text = r#"<b>bold?</b> <img src=y onerror="window.__xss=2"> & "quotes" <script>window.__xss=3</script>"#;
    join(&browser, &server.url("/chat.html"), name).await;
    browser.type_into("#text", text).await;
    browser.click("#send").await;
    wait_chat_text(&browser, text).await;
    browser
        .wait_for(
            "the name in the online list",
            &format!(
                "[...document.querySelectorAll('#people .who')].some((e) => e.textContent.startsWith({}))",
                json!(name)
            ),
            SHOW,
        )
        .await;
    assert_eq!(chat_lines(&browser).await, [(name.to_owned(), text.to_owned())]);
    assert_eq!(
        browser
            .exec("return document.getElementById('me-name').textContent;", json!([]))
            .await,
        name
    );
    let injected =
        "return [document.querySelectorAll('img, b, script:not([type=module])').length, window.__xss === undefined];";
    tokio::time::sleep(Duration::from_millis(200)).await; // time for an onerror to fire
    assert_eq!(
        browser.exec(injected, json!([])).await,
        json!([0, true]),
        "no element was created"
    );
    browser.screenshot("escape-chat").await;

    // The guestbook too.
    browser.goto(&server.url("/feed.html")).await;
    browser.wait_for("the feed to go live", LIVE, SHOW).await;
    comment(&server, name, text).await;
    browser
        .wait_for(
            "the comment",
            "document.querySelectorAll('#comments blockquote').length === 1",
            SHOW,
        )
        .await;
    assert_eq!(browser.texts("#comments .from").await, [name]);
    assert_eq!(feed_texts(&browser).await, [text]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        browser.exec(injected, json!([])).await,
        json!([0, true]),
        "no element was created"
    );
}
