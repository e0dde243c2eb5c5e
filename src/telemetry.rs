//! Logging setup: a `tracing` subscriber writing to stderr (stdout belongs to `review` output).
//!
//! The filter comes from `RUST_LOG` when it is set, else from `--log-level`; the format is
//! human text or one JSON object per line (`--log-format json`) for log pipelines.
//!
//! Lines are written off the request path ([`lines`]): a request formats its line and leaves it
//! in a queue of at most [`LOG_QUEUE_LINES`] lines and [`LOG_QUEUE_BYTES`] bytes, which one
//! writer thread writes to stderr in batches, at least every [`lines::FLUSH_INTERVAL`]. Logging
//! never blocks a review: when the writer falls that far behind, new lines are dropped and counted
//! (`pytorchjob_guard_log_lines_dropped_total`, see [`Logging::dropped_lines`]). Touches stderr
//! only.

pub mod lines;

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::json::{Escaping, write_string};

/// Lines waiting for the writer at most; past it, new lines are dropped and counted.
pub const LOG_QUEUE_LINES: usize = lines::MAX_LINES;

/// Bytes waiting for the writer at most; a line that does not fit is dropped and counted. A
/// decision line is a few hundred bytes (its `denied` field names at most
/// `policy::MAX_PATHS_IN_MESSAGE` paths and counts the rest in `denied_more`).
pub const LOG_QUEUE_BYTES: usize = lines::MAX_BYTES;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// The installed logging: keeps the writer thread alive (dropping it writes what is queued)
/// and counts the lines dropped under overload.
#[derive(Debug)]
pub struct Logging {
    writer: lines::Flusher,
}

impl Logging {
    /// Lines dropped because the writer was [`LOG_QUEUE_LINES`] or [`LOG_QUEUE_BYTES`] behind.
    pub fn dropped_lines(&self) -> u64 {
        self.writer.dropped()
    }

    /// A handle that reads the dropped-line count (for the metrics).
    pub fn dropped_counter(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        self.writer.dropped_counter()
    }
}

/// Install the global subscriber. `level` is an `EnvFilter` directive such as `info` or
/// `pytorchjob_guard=debug`; `RUST_LOG`, when set, wins.
pub fn init(format: LogFormat, level: &str) -> anyhow::Result<Logging> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(level)?,
    };
    let (writer, flusher) = lines::spawn("log-writer", std::io::stderr())?;
    let result = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            // Colours for a person at a terminal, plain text for a file or a log collector.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => tracing::subscriber::set_global_default(json_subscriber(writer, filter))
            .map_err(Into::into),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    Ok(Logging { writer: flusher })
}

/// The `--log-format json` subscriber over `writer`: one JSON object per line,
/// `{"timestamp":…,"level":"INFO","target":…,"message":…, the event's fields}`.
pub fn json_subscriber<W>(writer: W, filter: EnvFilter) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .event_format(JsonLine)
        .finish()
}

/// The JSON line of one event, written field by field into one string and handed to the line
/// buffer whole: no intermediate map, no serializer, no dynamic call per piece.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        // A decision line is a few hundred bytes.
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        write_timestamp(&mut line, std::time::SystemTime::now());
        line.push_str("\",\"level\":\"");
        line.push_str(metadata.level().as_str());
        line.push_str("\",\"target\":");
        write_string(&mut line, metadata.target())?;
        let mut fields = JsonFields {
            line: &mut line,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// `at` in UTC as RFC 3339 with microseconds (`2026-12-02T03:59:17.123456Z`), what
/// tracing-subscriber's `SystemTime` writes, digit by digit rather than through `fmt`.
fn write_timestamp(line: &mut String, at: std::time::SystemTime) {
    let at = time::OffsetDateTime::from(at);
    let digits = |line: &mut String, value: u32, width: u32| {
        for place in (0..width).rev() {
            line.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
        }
    };
    match u32::try_from(at.year()) {
        Ok(year) if year <= 9999 => digits(line, year, 4),
        _ => {
            let _ = write!(line, "{:+}", at.year());
        }
    }
    for (separator, value) in [
        ('-', u8::from(at.month())),
        ('-', at.day()),
        ('T', at.hour()),
        (':', at.minute()),
        (':', at.second()),
    ] {
        line.push(separator);
        digits(line, u32::from(value), 2);
    }
    line.push('.');
    digits(line, at.microsecond(), 6);
    line.push('Z');
}

/// Writes each field as `,"name":value`.
struct JsonFields<'l> {
    line: &'l mut String,
    result: fmt::Result,
}

impl JsonFields<'_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_ok() {
            self.line.push(',');
            self.result = write_string(self.line, field.name());
            self.line.push(':');
            self.result = self.result.and_then(|()| value(self.line));
        }
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |line| write_string(line, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |line| {
            line.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |line| write!(line, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |line| write!(line, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |line| {
            line.push('"');
            write!(Escaping(&mut *line), "{value:?}")?;
            line.push('"');
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    #[test]
    fn timestamps_are_rfc_3339_in_utc_with_microseconds() {
        for (seconds, nanos, expected) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (1_764_647_957, 123_456_001, "2025-12-02T03:59:17.123456Z"),
            (951_782_400, 999_999_046, "2000-02-29T00:00:00.999999Z"),
            (4_102_444_799, 500_000_000, "2099-12-31T23:59:59.500000Z"),
        ] {
            let at = std::time::UNIX_EPOCH + std::time::Duration::new(seconds, nanos);
            let mut line = String::new();
            write_timestamp(&mut line, at);
            assert_eq!(line, expected);
        }
    }

    #[test]
    fn each_event_is_one_json_object_with_its_fields_escaped() {
        let lines = Lines::default();
        let subscriber = json_subscriber(lines.clone(), EnvFilter::new("info"));
        tracing::subscriber::with_default(subscriber, || {
            let tricky = "a \"quote\", a \\ backslash,\n a newline, a \u{1} control, é";
            let paths = vec!["metadata.labels[\"app\"]".to_owned()];
            tracing::info!(text = tricky, count = 3u64, delta = -2i64, ok = true, paths = ?paths, "said {}", "this");
            tracing::debug!("filtered out");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let event: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(event["level"], "INFO");
        assert_eq!(event["message"], "said this");
        assert_eq!(event["target"], module_path!());
        assert_eq!(
            event["text"],
            "a \"quote\", a \\ backslash,\n a newline, a \u{1} control, é"
        );
        assert_eq!(event["count"], 3);
        assert_eq!(event["delta"], -2);
        assert_eq!(event["ok"], true);
        assert_eq!(
            event["paths"],
            format!("{:?}", ["metadata.labels[\"app\"]"])
        );
        assert!(
            event["timestamp"].as_str().unwrap().ends_with('Z'),
            "{event}"
        );
        assert!(
            text.contains("\"message\":\"said this\""),
            "the shape log pipelines grep for"
        );
    }
}
