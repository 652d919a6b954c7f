//! Serving the notify fds: one epoll set over all of them, a fixed pool of worker threads.
//!
//! Each fd is registered one-shot: the worker that gets its event receives one
//! notification, re-arms the fd at once (so that the container's other threads are served
//! by the other workers meanwhile) and handles it. A slow notification (a proc mount runs
//! a helper, bounded by its timeout) ties up one worker only. An fd whose filter has no
//! process left polls as hung up and is dropped.
//!
//! Fairness: one container has at most `per_container` notifications in the workers at
//! once. An event of a container at its cap is parked (its fd stays disarmed, the
//! notification waits in the kernel) and re-armed when one of the container's
//! notifications is done, so a container flooding the trap (16 threads mounting proc,
//! each a helper process) keeps the other workers free for the other containers.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use parking_lot::Mutex;

use super::abi;
use super::handler::{self, Context, Mounted, Source};
use super::locks::ViewLocks;

/// How long a worker waits for an event before it checks whether to stop.
const WAIT_MS: libc::c_int = 200;

pub struct Dispatcher {
    epoll: OwnedFd,
    sources: Mutex<HashMap<u64, Arc<Source>>>,
    next: AtomicU64,
    stop: AtomicBool,
    ctx: Context,
    mounted: Mounted,
    locks: Arc<ViewLocks>,
    per_container: usize,
    load: Mutex<HashMap<String, Load>>,
}

/// A container's notifications in the workers, and its fds parked at the cap.
#[derive(Debug, Default)]
struct Load {
    running: usize,
    parked: Vec<u64>,
}

impl Dispatcher {
    /// A dispatcher serving at most `per_container` notifications of one container at once.
    pub fn new(
        ctx: Context,
        locks: Arc<ViewLocks>,
        per_container: usize,
    ) -> io::Result<Dispatcher> {
        // SAFETY: epoll_create1 returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Dispatcher {
            // SAFETY: the kernel just returned this fd.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            sources: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            ctx,
            mounted: Mounted::default(),
            locks,
            per_container: per_container.max(1),
            load: Mutex::new(HashMap::new()),
        })
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The outcome of each container's lock.
    pub fn locks(&self) -> &ViewLocks {
        &self.locks
    }

    /// Where the trap mounted proc and sysfs, per container.
    pub fn mounted(&self) -> &Mounted {
        &self.mounted
    }

    /// Starts serving `source`.
    pub fn add(&self, source: Source) -> io::Result<()> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let fd = source.fd.as_raw_fd();
        self.sources.lock().insert(key, Arc::new(source));
        if let Err(err) = self.ctl(libc::EPOLL_CTL_ADD, fd, key) {
            self.sources.lock().remove(&key);
            return Err(err);
        }
        Ok(())
    }

    /// How many notify fds are served.
    pub fn len(&self) -> usize {
        self.sources.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The containers served, with their number of notify fds.
    pub fn containers(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for source in self.sources.lock().values() {
            *counts.entry(source.container.clone()).or_default() += 1;
        }
        let mut list: Vec<_> = counts.into_iter().collect();
        list.sort();
        list
    }

    fn ctl(&self, op: libc::c_int, fd: libc::c_int, key: u64) -> io::Result<()> {
        let mut event =
            libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32, u64: key };
        // SAFETY: epoll_ctl on our epoll fd with an event struct we own.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn remove(&self, key: u64) {
        let mut sources = self.sources.lock();
        if let Some(source) = sources.remove(&key) {
            if !sources.values().any(|s| s.container == source.container) {
                self.mounted.forget(&source.container);
            }
            self.locks.forget(&source.container, source.pid);
            drop(sources);
            // SAFETY: epoll_ctl DEL on our epoll fd; the event argument is ignored.
            unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    source.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                )
            };
            tracing::debug!(container = %source.container, pid = source.pid, "a notify fd has no process left");
        }
    }

    /// One worker's loop, until [`Dispatcher::stop`].
    fn work(&self) {
        while !self.stop.load(Ordering::SeqCst) {
            let mut event = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: epoll_wait for one event into memory we own.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut event, 1, WAIT_MS) };
            if n <= 0 {
                continue; // timeout, or EINTR
            }
            let key = event.u64;
            let Some(source) = self.sources.lock().get(&key).cloned() else {
                continue;
            };
            if event.events & libc::EPOLLIN as u32 != 0 {
                if !self.admit(&source.container, key) {
                    continue; // parked until one of the container's calls is done
                }
                let received = abi::recv(source.fd.as_fd());
                self.rearm(&source, key);
                match received {
                    Ok(notif) => self.serve(&source, &notif),
                    // The caller was killed between the event and the receive.
                    Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(err) => {
                        tracing::warn!(container = %source.container, error = %err, "cannot receive a notification")
                    }
                }
                self.done(&source.container);
            } else if event.events & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                self.remove(key);
            }
        }
    }

    /// Takes one notification of `container` into a worker, or parks its fd `key` when the
    /// container is at its cap.
    fn admit(&self, container: &str, key: u64) -> bool {
        let mut load = self.load.lock();
        let entry = load.entry(container.to_string()).or_default();
        if entry.running >= self.per_container {
            entry.parked.push(key);
            return false;
        }
        entry.running += 1;
        true
    }

    /// One notification of `container` is done: re-arms its parked fds (all of them: one
    /// whose caller died meanwhile would never fire again and hold up the others). Those
    /// with a notification waiting fire at once; past the cap they park again.
    fn done(&self, container: &str) {
        let mut load = self.load.lock();
        let Some(entry) = load.get_mut(container) else {
            return;
        };
        entry.running = entry.running.saturating_sub(1);
        let parked = std::mem::take(&mut entry.parked);
        if entry.running == 0 {
            load.remove(container);
        }
        drop(load);
        for key in parked {
            if let Some(source) = self.sources.lock().get(&key).cloned() {
                self.rearm(&source, key);
            }
        }
    }

    fn rearm(&self, source: &Source, key: u64) {
        if let Err(err) = self.ctl(libc::EPOLL_CTL_MOD, source.fd.as_raw_fd(), key) {
            tracing::error!(container = %source.container, error = %err, "cannot re-arm a notify fd");
        }
    }

    fn serve(&self, source: &Source, notif: &abi::Notification) {
        let answer = handler::handle(&self.ctx, source, &self.mounted, notif);
        match abi::send(source.fd.as_fd(), notif.id, answer) {
            Ok(()) => {}
            // The caller is gone or was interrupted: nobody waits for this answer.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
            Err(err) => {
                tracing::warn!(container = %source.container, error = %err, "cannot answer a notification")
            }
        }
    }

    /// Makes the workers return (within [`WAIT_MS`]).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The worker threads of a dispatcher. Dropping it stops and joins them.
pub struct Workers {
    dispatcher: Arc<Dispatcher>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn start(dispatcher: Arc<Dispatcher>, count: usize) -> io::Result<Workers> {
        let mut workers = Workers { dispatcher, handles: Vec::new() };
        for i in 0..count.max(1) {
            let dispatcher = workers.dispatcher.clone();
            let handle = thread::Builder::new()
                .name(format!("mounttrap-{i}"))
                .spawn(move || dispatcher.work())?;
            workers.handles.push(handle);
        }
        Ok(workers)
    }

    fn shutdown(&mut self) {
        self.dispatcher.stop();
        for handle in self.handles.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a mount trap worker panicked");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn dispatcher(per_container: usize) -> Dispatcher {
        let ctx =
            Context::new("/proc/self/exe".into(), "/nonexistent".into(), Duration::ZERO).unwrap();
        Dispatcher::new(ctx, Arc::new(ViewLocks::default()), per_container).unwrap()
    }

    #[test]
    fn a_container_at_its_cap_is_parked_the_others_are_not() {
        let d = dispatcher(2);
        assert!(d.admit("flood", 1));
        assert!(d.admit("flood", 2));
        assert!(!d.admit("flood", 3), "the third call of one container waits");
        assert!(!d.admit("flood", 4));
        assert!(d.admit("quiet", 5), "another container is served at once");
        assert_eq!(d.load.lock()["flood"].parked, [3, 4]);
        d.done("flood");
        assert!(d.load.lock()["flood"].parked.is_empty(), "every parked fd re-armed");
        assert!(d.admit("flood", 3));
        d.done("flood");
        d.done("flood");
        d.done("quiet");
        assert!(d.load.lock().is_empty(), "nothing left once every call is done");
    }
}
