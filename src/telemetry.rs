//! Logging setup: a `tracing` subscriber writing to stderr (stdout belongs to `review` output).
//!
//! The filter comes from `RUST_LOG` when it is set, else from `--log-level`; the format is
//! human text or one JSON object per line (`--log-format json`) for log pipelines.
//!
//! Lines are written off the request path: a request formats its line and hands it to a queue
//! of at most [`LOG_QUEUE_LINES`] lines, which one writer thread drains into a buffered stderr,
//! flushing whenever the queue is empty (so an idle server's lines appear at once, and a busy
//! one's are written in batches). Logging never blocks a review: when the writer falls that far
//! behind, new lines are dropped and counted (`pytorchjob_guard_log_lines_dropped_total`, see
//! [`Logging::dropped_lines`]). Touches stderr only.

use std::io::BufWriter;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines waiting for the writer at most; past it, new lines are dropped and counted. A decision
/// line is a few hundred bytes (a deny-heavy one a few KiB), so the queue holds a few MiB.
pub const LOG_QUEUE_LINES: usize = 4096;

/// The writer's buffer: lines are written to stderr in batches of up to this many bytes.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// The installed logging: keeps the writer thread alive (dropping it flushes what is queued)
/// and counts the lines dropped under overload.
#[derive(Debug)]
pub struct Logging {
    _writer: WorkerGuard,
    dropped: ErrorCounter,
}

impl Logging {
    /// Lines dropped because the writer was [`LOG_QUEUE_LINES`] behind.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.dropped_lines() as u64
    }

    /// A handle that reads the dropped-line count (for the metrics).
    pub fn dropped_counter(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let dropped = self.dropped.clone();
        move || dropped.dropped_lines() as u64
    }
}

/// Install the global subscriber. `level` is an `EnvFilter` directive such as `info` or
/// `pytorchjob_guard=debug`; `RUST_LOG`, when set, wins.
pub fn init(format: LogFormat, level: &str) -> anyhow::Result<Logging> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(level)?,
    };
    let stderr = BufWriter::with_capacity(WRITE_BUFFER_BYTES, std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .thread_name("log-writer")
        .finish(stderr);
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    Ok(Logging {
        _writer: guard,
        dropped,
    })
}
