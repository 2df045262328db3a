//! Exit statuses of the shim's children other than the init (exec helpers, exec
//! processes, orphans reparented to us). The SIGCHLD reaper reaps every child with
//! `waitpid(-1)`, so nothing else may wait for a pid: a task that needs one's status asks
//! here instead. A child may exit before anyone asks (a fast `echo`), so unclaimed
//! statuses are kept, up to a bound (orphans nobody asks for must not grow it forever).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// How many unclaimed exit statuses are kept.
const KEEP: usize = 4096;

#[derive(Default)]
struct Inner {
    exited: HashMap<i32, i32>,
    order: VecDeque<i32>,
    waiters: HashMap<i32, oneshot::Sender<i32>>,
}

/// The registry; share it in an `Arc`.
#[derive(Default)]
pub struct Children {
    inner: Mutex<Inner>,
}

impl Children {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the reaper: `pid` exited with `code` (128+signal when killed).
    pub fn exited(&self, pid: i32, code: i32) {
        let mut g = self.lock();
        if let Some(tx) = g.waiters.remove(&pid) {
            let _ = tx.send(code);
            return;
        }
        if g.exited.insert(pid, code).is_none() {
            g.order.push_back(pid);
        }
        while g.order.len() > KEEP {
            if let Some(old) = g.order.pop_front() {
                g.exited.remove(&old);
            }
        }
    }

    /// The exit code of child `pid`, now or once it exits. Fails (the sender is dropped)
    /// only if someone else claims the same pid.
    pub fn wait(&self, pid: i32) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        let mut g = self.lock();
        if let Some(code) = g.exited.remove(&pid) {
            g.order.retain(|p| *p != pid);
            let _ = tx.send(code);
        } else {
            g.waiters.insert(pid, tx);
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_before_and_after_wait() {
        let c = Children::default();
        c.exited(10, 3);
        assert_eq!(c.wait(10).await.unwrap(), 3);
        let rx = c.wait(11);
        c.exited(11, 137);
        assert_eq!(rx.await.unwrap(), 137);
        // Claimed statuses are gone.
        let mut rx = c.wait(10);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn unclaimed_statuses_are_bounded() {
        let c = Children::default();
        for pid in 0..(KEEP as i32 + 10) {
            c.exited(pid, 0);
        }
        let g = c.lock();
        assert_eq!(g.exited.len(), KEEP);
        assert!(!g.exited.contains_key(&0));
    }
}
