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
        let cfg: postgres::Config = conninfo.parse()?;
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Acks = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let handle = std::thread::spawn(move || {
            let mut id = 0i64;
            while !s.load(Ordering::Relaxed) {
                id += 1;
                let (cfg, a, my) = (cfg.clone(), a.clone(), id);
                // Each attempt on its own thread, abandoned after 2 s: a hung server must
                // not stop the client.
                let t = std::thread::spawn(move || {
                    let Ok(mut c) = cfg.connect(postgres::NoTls) else {
                        return;
                    };
                    if let Ok(row) = c.query_one(
                        "INSERT INTO demo_writes VALUES ($1, current_setting('cluster_name')) RETURNING node",
                        &[&my],
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
