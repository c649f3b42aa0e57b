//! The glue between smol and hyper 1: `Io` wraps a smol `TcpStream` as `hyper::rt::{Read,
//! Write}` and adds the idle (no-progress) timeout; `SmolTimer` implements `hyper::rt::Timer`
//! on `smol::Timer` so hyper can enforce its header-read timeout.
//!
//! This replaces tokio's I/O traits and the `smol-hyper` crate (unmaintained since 2023). It must
//! stay free of HTTP logic and of `unsafe`: reads go through a small stack buffer instead of
//! writing into hyper's uninitialised memory. The HTTP/1 server spawns nothing, so no executor
//! hook is needed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::rt::{ReadBufCursor, Sleep, Timer};
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

use super::service::Stats;

/// Bytes read per `poll_read`. The copy from this stack buffer into hyper's buffer costs far
/// less than the syscall; 8 KiB matches hyper's initial read size.
const READ_CHUNK: usize = 8 * 1024;

/// A TCP connection as hyper sees it. Counts bytes and fails an operation that has waited
/// `idle` without any byte moving in either direction.
pub(super) struct Io {
    stream: TcpStream,
    idle: Duration,
    last_progress: Instant,
    /// Armed lazily when an operation first has to wait; (timer, deadline it is set for).
    watchdog: Option<(smol::Timer, Instant)>,
    stats: Rc<Stats>,
}

impl Io {
    pub(super) fn new(stream: TcpStream, idle: Duration, stats: Rc<Stats>) -> Self {
        Io { stream, idle, last_progress: Instant::now(), watchdog: None, stats }
    }

    fn progressed(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Called when the socket is not ready: keep waiting (`Pending`, with the watchdog
    /// registered on `cx`) or give up with `TimedOut` if nothing moved for `idle`.
    fn wait_or_time_out<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let Some(due) = self.last_progress.checked_add(self.idle) else {
            return Poll::Pending; // an idle limit so large it cannot be represented: never fire
        };
        let (timer, armed_for) = self.watchdog.get_or_insert_with(|| (smol::Timer::at(due), due));
        if *armed_for != due {
            timer.set_at(due);
            *armed_for = due;
        }
        if Pin::new(timer).poll(cx).is_ready() || Instant::now() >= due {
            self.stats.idle_timeout();
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")));
        }
        Poll::Pending
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut chunk = [0u8; READ_CHUNK];
        let want = buf.remaining().min(READ_CHUNK);
        let Some(dst) = chunk.get_mut(..want) else {
            return Poll::Ready(Ok(()));
        };
        match Pin::new(&mut this.stream).poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => {
                let got = dst.get(..n).unwrap_or_default();
                buf.put_slice(got);
                if n > 0 {
                    this.progressed();
                    this.stats.received(n);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.wait_or_time_out(cx),
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(this.wrote(n))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.wait_or_time_out(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(this.wrote(n))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.wait_or_time_out(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.stream).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

impl Io {
    fn wrote(&mut self, n: usize) -> usize {
        if n > 0 {
            self.progressed();
            self.stats.sent(n);
        }
        n
    }
}

/// `hyper::rt::Timer` on smol's reactor timers.
#[derive(Clone, Copy, Debug)]
pub(super) struct SmolTimer;

/// A hyper `Sleep` backed by `smol::Timer` (which is `Send + Sync`, as hyper requires).
struct SmolSleep(smol::Timer);

impl Future for SmolSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().0).poll(cx).map(|_| ())
    }
}

impl Sleep for SmolSleep {}

impl Timer for SmolTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(SmolSleep(smol::Timer::after(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(SmolSleep(smol::Timer::at(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        // Reuse the registration when it is ours; hyper resets its header timer per request.
        match sleep.as_mut().downcast_mut_pin::<SmolSleep>() {
            Some(ours) => ours.get_mut().0.set_at(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_sleeps_and_resets() {
        smol::block_on(async {
            let start = Instant::now();
            let mut sleep = SmolTimer.sleep(Duration::from_secs(3600));
            SmolTimer.reset(&mut sleep, Instant::now() + Duration::from_millis(20));
            sleep.as_mut().await;
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(20), "{took:?}");
            assert!(took < Duration::from_secs(2), "{took:?}");
        });
    }
}
