//! The durable single-node store: messages and registrations in a redb file.
//!
//! redb is a maintained, pure-Rust embedded database with ACID transactions
//! and copy-on-write B-trees; a transaction committed with its default
//! `Durability::Immediate` is on disk (fsync'd) when `commit` returns, and a
//! crash, `kill -9` included, leaves the file at the last commit. So a send is
//! answered 201 only after the commit holding it returned.
//!
//! Appends go through one writer thread that commits every append waiting at
//! that moment in one transaction: one fsync for a whole burst, and positions
//! assigned in commit order. The queue to it is bounded: when the disk is
//! slower than the senders, a send waits for room instead of growing memory.
//! Reads, sweeps and opening run in blocking tasks, reads on their own read
//! transactions (MVCC: they never wait for the writer). Open-stream counts and
//! idle clocks stay in memory (they describe this process); registrations are
//! durable, and after a restart every client has a fresh idle allowance to come
//! back in.
//!
//! Tables: `meta` (the epoch), `heads` (channel → last position, kept even when
//! its history is gone so an id is never issued twice), `messages` ((channel,
//! position) → (time, recipient, envelope)), `clients` ((channel, public token)
//! → registration as JSON). Retention deletes from the front of each channel,
//! and redb reuses freed pages, so the file stays bounded by the retained data.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::local::{ClientTable, Saved};
use super::{unavailable, ClientRecord, Feed, History, MessageLog, Retention, StoreError, StoreFuture, StoredClient};
use crate::protocol::{ChannelName, Draft, Epoch, Message, PublicToken, Timestamp};

const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
const HEADS: TableDefinition<'static, &str, u64> = TableDefinition::new("heads");
const MESSAGES: TableDefinition<'static, (&str, u64), (u64, &str, &[u8])> = TableDefinition::new("messages");
const CLIENTS: TableDefinition<'static, (&str, &str), &[u8]> = TableDefinition::new("clients");

/// Appends waiting for the writer thread at most; a sender past that waits
/// for room (back-pressure), so a burst faster than the disk cannot grow
/// memory without bound.
const APPEND_QUEUE: usize = 4096;

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 512;

struct AppendJob {
    channel: ChannelName,
    draft: Draft,
    reply: oneshot::Sender<Result<Arc<Message>, StoreError>>,
}

/// The log: see the module documentation.
pub(super) struct FileLog {
    db: Arc<Database>,
    epoch: Epoch,
    retention: Retention,
    /// To the writer thread; it stops when this is dropped.
    appends: mpsc::Sender<AppendJob>,
}

/// The registrations found in the file, and what saves new ones to it.
pub(super) struct Registrations {
    pub(super) table: Arc<ClientTable>,
    pub(super) saved: SavedInFile,
}

impl FileLog {
    /// Opens (or creates) the database at `path`, keeping its epoch, and loads
    /// the registered clients.
    ///
    /// # Errors
    /// The file cannot be opened or created, or is not a database of ours.
    pub(super) fn open(
        path: &Path,
        retention: Retention,
        feed: Arc<dyn Feed>,
    ) -> Result<(Self, Registrations), StoreError> {
        let db = Arc::new(Database::create(path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?);
        let (epoch, registrations) = Self::prepare(&db).map_err(unavailable)?;
        let table = Arc::new(ClientTable::new());
        for (channel, record) in registrations {
            table.register(&channel, record);
        }
        let (appends, jobs) = mpsc::channel(APPEND_QUEUE);
        let writer = Writer {
            db: Arc::clone(&db),
            epoch,
            retention,
            feed,
            heads: HashMap::new(),
        };
        thread::Builder::new()
            .name("ssehub-file-writer".into())
            .spawn(move || writer.run(jobs))
            .map_err(unavailable)?;
        let registrations = Registrations {
            table,
            saved: SavedInFile { db: Arc::clone(&db) },
        };
        let log = FileLog {
            db,
            epoch,
            retention,
            appends,
        };
        Ok((log, registrations))
    }

    /// Creates the tables, draws the epoch on first use, and reads the
    /// registrations; each client gets a fresh idle allowance from now.
    fn prepare(db: &Database) -> Result<(Epoch, Vec<(ChannelName, ClientRecord)>), redb::Error> {
        let txn = db.begin_write()?;
        let epoch =
            {
                let mut meta = txn.open_table(META)?;
                let existing = meta.get("epoch")?.map(|v| v.value());
                match existing {
                    Some(epoch) => Epoch(u32::try_from(epoch).map_err(|_| {
                        redb::Error::Corrupted(format!("the stored epoch {epoch} is not an ssehub epoch"))
                    })?),
                    None => {
                        let epoch = Epoch::random();
                        meta.insert("epoch", u64::from(epoch.0))?;
                        epoch
                    }
                }
            };
        txn.open_table(HEADS)?;
        txn.open_table(MESSAGES)?;
        let mut registrations = Vec::new();
        let now = Timestamp::now();
        {
            let clients = txn.open_table(CLIENTS)?;
            for entry in clients.iter()? {
                let (key, value) = entry?;
                let (channel, public) = key.value();
                let (Ok(channel), Ok(public)) = (ChannelName::parse(channel), PublicToken::parse(public)) else {
                    continue;
                };
                if let Some(record) = StoredClient::parse(value.value(), public, 0, Some(now)) {
                    registrations.push((channel, record));
                }
            }
        }
        txn.commit()?;
        Ok((epoch, registrations))
    }
}

/// Runs `work` on a blocking thread with the database.
async fn blocking<T: Send + 'static>(
    db: &Arc<Database>,
    work: impl FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
) -> Result<T, StoreError> {
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || work(&db))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
}

/// The writer thread's state: positions of the channels it has written.
struct Writer {
    db: Arc<Database>,
    epoch: Epoch,
    retention: Retention,
    feed: Arc<dyn Feed>,
    heads: HashMap<ChannelName, u64>,
}

impl Writer {
    fn run(mut self, mut jobs: mpsc::Receiver<AppendJob>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            match self.commit(&batch) {
                Ok(messages) => {
                    for (job, message) in batch.into_iter().zip(messages) {
                        // After the commit, in position order: live subscribers
                        // never see a message that is not on disk.
                        self.feed.deliver(&job.channel, &message);
                        let _ = job.reply.send(Ok(message));
                    }
                }
                Err(error) => {
                    // Positions cached for this batch were not committed.
                    self.heads.clear();
                    tracing::error!(%error, "file store commit failed");
                    for job in batch {
                        let _ = job.reply.send(Err(unavailable(&error)));
                    }
                }
            }
        }
    }

    fn commit(&mut self, batch: &[AppendJob]) -> Result<Vec<Arc<Message>>, redb::Error> {
        let now = Timestamp::now();
        let max = self.retention.max_messages as u64;
        let txn = self.db.begin_write()?;
        let mut messages = Vec::with_capacity(batch.len());
        {
            let mut heads = txn.open_table(HEADS)?;
            let mut table = txn.open_table(MESSAGES)?;
            for job in batch {
                let name = job.channel.as_str();
                let last = match self.heads.get(&job.channel) {
                    Some(last) => *last,
                    None => heads.get(name)?.map_or(0, |v| v.value()),
                };
                let seq = last + 1;
                let message = Message::encode(self.epoch, seq, &job.channel, &job.draft, now);
                let to = job.draft.to.as_ref().map_or("", PublicToken::as_str);
                table.insert((name, seq), (now.0, to, message.envelope()))?;
                heads.insert(name, seq)?;
                if seq > max {
                    table.remove((name, seq - max))?;
                }
                self.heads.insert(job.channel.clone(), seq);
                messages.push(Arc::new(message));
            }
        }
        txn.commit()?;
        Ok(messages)
    }
}

fn read_history(
    db: &Database,
    epoch: Epoch,
    retention: Retention,
    channel: &str,
    after: u64,
    limit: usize,
) -> Result<History, redb::Error> {
    let txn = db.begin_read()?;
    let last_seq = txn.open_table(HEADS)?.get(channel)?.map_or(0, |v| v.value());
    let table = txn.open_table(MESSAGES)?;
    let cutoff = retention.cutoff(Timestamp::now());
    let oldest_kept = last_seq.saturating_sub(retention.max_messages as u64) + 1;
    // The sweep deletes expired messages now and then; until it has, skip them.
    let mut first_seq = None;
    for entry in table.range((channel, oldest_kept)..=(channel, u64::MAX))? {
        let (key, value) = entry?;
        if value.value().0 >= cutoff {
            first_seq = Some(key.value().1);
            break;
        }
    }
    let mut messages = Vec::new();
    if let (Some(first), true) = (first_seq, limit > 0) {
        let start = first.max(after.saturating_add(1));
        for entry in table.range((channel, start)..=(channel, u64::MAX))?.take(limit) {
            let (key, value) = entry?;
            let (time, to, envelope) = value.value();
            let to = if to.is_empty() {
                None
            } else {
                PublicToken::parse(to).ok()
            };
            messages.push(Arc::new(Message::from_envelope(
                epoch,
                key.value().1,
                Timestamp(time),
                to,
                envelope,
            )));
        }
    }
    let retained = first_seq.map_or(0, |first| usize::try_from(last_seq - first + 1).unwrap_or(usize::MAX));
    Ok(History {
        messages,
        first_seq,
        last_seq,
        retained,
    })
}

fn sweep(db: &Database, retention: Retention) -> Result<(), redb::Error> {
    let cutoff = retention.cutoff(Timestamp::now());
    let txn = db.begin_write()?;
    {
        let heads = txn.open_table(HEADS)?;
        let mut table = txn.open_table(MESSAGES)?;
        for head in heads.iter()? {
            let (channel, last) = head?;
            let (channel, last) = (channel.value(), last.value());
            let oldest_kept = last.saturating_sub(retention.max_messages as u64) + 1;
            table.retain_in((channel, 0)..=(channel, u64::MAX), |(_, seq), (time, _, _)| {
                seq >= oldest_kept && time >= cutoff
            })?;
        }
    }
    txn.commit()?;
    Ok(())
}

impl MessageLog for FileLog {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(blocking(&self.db, |db| {
            db.begin_read().map(drop).map_err(redb::Error::from)
        }))
    }

    fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn append<'a>(&'a self, channel: &'a ChannelName, draft: Draft) -> StoreFuture<'a, Arc<Message>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let job = AppendJob {
                channel: channel.clone(),
                draft,
                reply,
            };
            self.appends
                .send(job)
                .await
                .map_err(|_| unavailable("the file store's writer has stopped"))?;
            answer
                .await
                .map_err(|_| unavailable("the file store's writer has stopped"))?
        })
    }

    fn read<'a>(&'a self, channel: &'a ChannelName, after: u64, limit: usize) -> StoreFuture<'a, History> {
        let (epoch, retention, channel) = (self.epoch, self.retention, channel.clone());
        Box::pin(blocking(&self.db, move |db| {
            read_history(db, epoch, retention, channel.as_str(), after, limit)
        }))
    }

    fn sweep(&self) -> StoreFuture<'_, ()> {
        let retention = self.retention;
        Box::pin(blocking(&self.db, move |db| sweep(db, retention)))
    }
}

/// Saves registrations in the `clients` table, for [`super::local::LocalClients`].
pub(super) struct SavedInFile {
    db: Arc<Database>,
}

impl Saved for SavedInFile {
    fn save<'a>(&'a self, channel: &'a ChannelName, client: &ClientRecord) -> StoreFuture<'a, ()> {
        let json = StoredClient::of(client).to_json();
        let (channel, public) = (channel.clone(), client.public_token.clone());
        Box::pin(blocking(&self.db, move |db| {
            let txn = db.begin_write()?;
            txn.open_table(CLIENTS)?
                .insert((channel.as_str(), public.as_str()), json.as_slice())?;
            txn.commit()?;
            Ok(())
        }))
    }

    fn forget(&self, clients: Vec<(ChannelName, PublicToken)>) -> StoreFuture<'_, ()> {
        Box::pin(blocking(&self.db, move |db| forget_clients(db, &clients)))
    }
}

fn forget_clients(db: &Database, keys: &[(ChannelName, PublicToken)]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(CLIENTS)?;
        for (channel, public) in keys {
            table.remove((channel.as_str(), public.as_str()))?;
        }
    }
    txn.commit()?;
    Ok(())
}
