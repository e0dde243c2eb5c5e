//! The log writer off the request path: a bounded queue of formatted lines and one thread that
//! writes them out in batches.
//!
//! A request appends its line to the queue under a lock held for the copy, and wakes nobody:
//! the writer thread takes everything queued every [`FLUSH_INTERVAL`], or as soon as
//! [`WAKE_AT_LINES`] lines or [`WAKE_AT_BYTES`] bytes wait, and writes it with one call. So a
//! review never makes a system call for its log line, an idle server's lines still appear within
//! the interval, and a busy one's are written in large batches. When the writer is
//! [`MAX_LINES`] lines or [`MAX_BYTES`] bytes behind (its output stalled), new lines are dropped
//! and counted ([`Queue::dropped`]): logging never blocks a review, and the lines waiting hold
//! at most [`MAX_BYTES`] (plus the batch being written, no larger). Dropping the [`Flusher`] writes what is
//! queued and stops the thread, so a server that shuts down loses no line, unless its output
//! is stalled: then it waits [`SHUTDOWN_WAIT`] and no longer. Touches only the writer it is
//! given.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line waits for the writer at most while fewer than [`WAKE_AT_LINES`] are queued:
/// short for a person reading the log, long enough that an idle server's writer sleeps.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Lines queued at most; past it, new lines are dropped and counted.
pub const MAX_LINES: usize = 4096;

/// Bytes queued at most; a line that does not fit is dropped and counted. Lines are a few
/// hundred bytes (a denial lists at most `policy::MAX_PATHS_IN_MESSAGE` paths), so this is
/// [`MAX_LINES`] ordinary lines; it bounds the queue's memory when lines are long (names,
/// users and uids come from the request), and with the batch being written (never larger)
/// the log holds at most twice this while its output is stalled.
pub const MAX_BYTES: usize = 2 * 1024 * 1024;

/// Queued lines at which the writer is woken before its interval ends: a quarter of the
/// queue, so a burst never fills it while the writer sleeps.
pub const WAKE_AT_LINES: usize = MAX_LINES / 4;

/// Queued bytes at which the writer is woken before its interval ends, so long lines (a
/// deny-heavy review's names hundreds of paths) do not pile up in memory meanwhile.
pub const WAKE_AT_BYTES: usize = 128 * 1024;

/// A batch's buffer that grew beyond this is not kept for the next batch.
const KEPT_BUFFER_BYTES: usize = 2 * WAKE_AT_BYTES;

/// The lines waiting for the writer.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    closed: bool,
}

/// Where requests leave their lines and the writer takes them.
#[derive(Debug, Default)]
pub struct Queue {
    pending: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicU64,
}

impl Queue {
    /// Lines dropped because [`MAX_LINES`] lines or [`MAX_BYTES`] bytes were already queued.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves whole lines behind: keep going.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue one line (or drop and count it when the queue is full or the line does not fit).
    fn push(&self, line: &[u8]) {
        let mut pending = self.lock();
        if pending.lines >= MAX_LINES || pending.bytes.len() + line.len() > MAX_BYTES {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = pending.bytes.len();
        pending.bytes.extend_from_slice(line);
        pending.lines += 1;
        if pending.lines == WAKE_AT_LINES
            || (before < WAKE_AT_BYTES && pending.bytes.len() >= WAKE_AT_BYTES)
        {
            self.wake.notify_one();
        }
    }

    /// Whether the writer should take the lines now rather than at the end of its interval.
    fn due(pending: &Pending) -> bool {
        pending.lines >= WAKE_AT_LINES || pending.bytes.len() >= WAKE_AT_BYTES || pending.closed
    }

    /// Wait until lines are due (the interval passed, enough lines or bytes are queued, or the
    /// queue is closed), then swap them into `batch`. Whether the queue is closed.
    fn take(&self, batch: &mut Vec<u8>) -> bool {
        let mut pending = self.lock();
        if !Self::due(&pending) {
            pending = self
                .wake
                .wait_timeout(pending, FLUSH_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut pending.bytes, batch);
        pending.lines = 0;
        pending.closed
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// What the subscriber writes an event's line through: one `write` per line (the fmt layer
/// formats the whole line first), queued whole.
#[derive(Debug, Clone, Copy)]
pub struct QueueWriter<'q>(&'q Queue);

impl Write for QueueWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The subscriber's writer: a handle on the queue.
#[derive(Debug, Clone)]
pub struct Lines(Arc<Queue>);

impl<'a> MakeWriter<'a> for Lines {
    type Writer = QueueWriter<'a>;

    fn make_writer(&'a self) -> QueueWriter<'a> {
        QueueWriter(&self.0)
    }
}

/// How long dropping the [`Flusher`] waits for the writer to write what is queued: a stalled
/// stderr must not hold a shutting-down server forever.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Keeps the writer thread; dropping it writes what is queued, waiting for that at most
/// [`SHUTDOWN_WAIT`].
#[derive(Debug)]
pub struct Flusher {
    queue: Arc<Queue>,
    /// Closed (its sender dropped) when the writer thread has written its last batch.
    finished: mpsc::Receiver<()>,
}

impl Flusher {
    /// Lines dropped because the queue was full ([`Queue::dropped`]).
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    /// A handle that reads the dropped-line count, for as long as anyone holds it.
    pub fn dropped_counter(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let queue = Arc::clone(&self.queue);
        move || queue.dropped()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.queue.close();
        // Disconnected once the thread has finished; a timeout leaves a stalled writer behind.
        let _ = self.finished.recv_timeout(SHUTDOWN_WAIT);
    }
}

/// Start a writer thread named `name` writing the queued lines to `out`: the subscriber's
/// writer and the thread's keeper.
pub fn spawn<W: Write + Send + 'static>(name: &str, mut out: W) -> io::Result<(Lines, Flusher)> {
    let queue = Arc::new(Queue::default());
    let taken = Arc::clone(&queue);
    let (finish, finished) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _finish = finish;
            let mut batch = Vec::new();
            loop {
                let closed = taken.take(&mut batch);
                if !batch.is_empty() {
                    // Nowhere to report a failing log writer but the log: carry on.
                    let _ = out.write_all(&batch).and_then(|()| out.flush());
                    batch.clear();
                    if batch.capacity() > KEPT_BUFFER_BYTES {
                        batch = Vec::new();
                    }
                }
                if closed {
                    return;
                }
            }
        })?;
    let flusher = Flusher {
        queue: Arc::clone(&queue),
        finished,
    };
    Ok((Lines(queue), flusher))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A writer whose batches are seen by the test.
    struct Sink(mpsc::Sender<Vec<u8>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(lines: &Lines, text: &str) {
        lines.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_line_of_a_running_server_is_written_by_the_writer_on_its_own() {
        let (sender, batches) = mpsc::channel();
        let (lines, _flusher) = spawn("test-log-writer", Sink(sender)).unwrap();
        line(&lines, "one\n");
        // Nothing closes the queue: the writer's interval brings the line out.
        let batch = batches.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(batch, b"one\n");
    }

    #[test]
    fn closing_writes_every_queued_line_in_order() {
        let (sender, batches) = mpsc::channel();
        let (lines, flusher) = spawn("test-log-writer", Sink(sender)).unwrap();
        let expected: String = (0..WAKE_AT_LINES * 3).map(|i| format!("{i}\n")).collect();
        for text in expected.split_inclusive('\n') {
            line(&lines, text);
        }
        assert_eq!(flusher.dropped(), 0);
        drop(flusher);
        let written: Vec<u8> = batches.try_iter().flatten().collect();
        assert_eq!(String::from_utf8(written).unwrap(), expected);
    }

    /// A writer that never returns from its first write: a stderr nobody reads.
    struct Stalled(mpsc::Sender<()>, mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(());
            let _ = self.1.recv();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_holds_shutdown_for_the_wait_only() {
        let (writing, started) = mpsc::channel();
        let (_never, release) = mpsc::channel();
        let (lines, flusher) = spawn("test-log-writer", Stalled(writing, release)).unwrap();
        line(&lines, "stuck\n");
        started.recv_timeout(Duration::from_secs(30)).unwrap();
        line(&lines, "queued behind it\n");
        let dropping = Instant::now();
        drop(flusher);
        let waited = dropping.elapsed();
        assert!(waited >= SHUTDOWN_WAIT, "{waited:?}");
        assert!(waited < SHUTDOWN_WAIT * 10, "{waited:?}");
    }

    #[test]
    fn many_lines_or_long_ones_are_due_before_the_interval_ends() {
        let queue = Queue::default();
        queue.push(b"short\n");
        assert!(!Queue::due(&queue.lock()));
        queue.push(&vec![b'x'; WAKE_AT_BYTES]);
        assert!(Queue::due(&queue.lock()), "bytes");
        let queue = Queue::default();
        for _ in 0..WAKE_AT_LINES - 1 {
            queue.push(b"line\n");
        }
        assert!(!Queue::due(&queue.lock()));
        queue.push(b"line\n");
        assert!(Queue::due(&queue.lock()), "lines");
    }

    #[test]
    fn a_full_queue_drops_and_counts_new_lines() {
        // No writer thread: nothing takes the lines.
        let queue = Queue::default();
        for i in 0..MAX_LINES + 7 {
            queue.push(format!("{i}\n").as_bytes());
        }
        assert_eq!(queue.dropped(), 7);
        let mut batch = Vec::new();
        queue.close();
        assert!(queue.take(&mut batch));
        let kept = String::from_utf8(batch).unwrap();
        assert_eq!(kept.lines().count(), MAX_LINES);
        assert_eq!(kept.lines().last(), Some(&*(MAX_LINES - 1).to_string()));
        // Taken lines make room again.
        queue.push(b"again\n");
        assert_eq!(queue.dropped(), 7);
    }

    #[test]
    fn a_line_that_does_not_fit_in_the_queued_bytes_is_dropped_and_counted() {
        let queue = Queue::default();
        let long = vec![b'x'; MAX_BYTES / 3];
        for _ in 0..3 {
            queue.push(&long);
        }
        assert_eq!(queue.dropped(), 0);
        // One byte more than is left: dropped whole, never cut.
        let left = MAX_BYTES - 3 * long.len();
        queue.push(&vec![b'y'; left + 1]);
        assert_eq!(queue.dropped(), 1);
        queue.push(&vec![b'z'; left]);
        assert_eq!(queue.dropped(), 1, "a line that fits exactly is kept");
        queue.push(b"\n");
        assert_eq!(queue.dropped(), 2);
        // A line longer than the whole bound is never queued.
        let queue = Queue::default();
        queue.push(&vec![b'x'; MAX_BYTES + 1]);
        assert_eq!(queue.dropped(), 1);
        let mut batch = Vec::new();
        queue.close();
        queue.take(&mut batch);
        assert!(batch.is_empty());
    }
}
