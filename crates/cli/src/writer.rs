//! A client that inserts a row at a fixed pace, each time on a fresh connection, and keeps
//! which inserts were acknowledged, when, and by which node (its cluster_name).

use anyhow::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Acks = Arc<Mutex<Vec<(Instant, String)>>>;

pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Acks,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    /// Insert into `demo_writes (id, node)` through `conninfo` every `every`.
    pub fn start(conninfo: &str, every: Duration) -> Result<Writer> {
        keeper_pq::conninfo::parse(conninfo).map_err(|e| anyhow::anyhow!("invalid conninfo: {e}"))?;
        let conninfo = conninfo.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Acks = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let handle = std::thread::spawn(move || {
            let mut id = 0i64;
            while !s.load(Ordering::Relaxed) {
                id += 1;
                let (conninfo, a, my) = (conninfo.clone(), a.clone(), id);
                // Each attempt on its own thread, abandoned after 2 s: a hung server must
                // not stop the client.
                let t = std::thread::spawn(move || {
                    let until = Instant::now() + Duration::from_secs(2);
                    let Ok(mut c) = keeper_pq::Conn::connect(&conninfo, &[], until) else {
                        return;
                    };
                    if let Ok(row) = c.query_one(
                        "INSERT INTO demo_writes VALUES ($1::bigint, current_setting('cluster_name')) RETURNING node",
                        &[&my],
                        until,
                    ) {
                        a.lock().unwrap().push((Instant::now(), row.get(0)));
                    }
                });
                let start = Instant::now();
                while !t.is_finished() && start.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(every);
            }
        });
        Ok(Writer { stop, acked, handle: Some(handle) })
    }

    pub fn acked(&self) -> Vec<(Instant, String)> {
        self.acked.lock().unwrap().clone()
    }

    /// Acknowledgements received after `t`, oldest first.
    pub fn acked_since(&self, t: Instant) -> Vec<(Instant, String)> {
        self.acked().into_iter().filter(|(at, _)| *at > t).collect()
    }

    pub fn stop(mut self) -> Vec<(Instant, String)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.acked()
    }
}
